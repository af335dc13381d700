"""Refusals name listed reasons (services/common/reasons.py): the errors keep
them across RPC, an unlisted one fails the tests, and the reasons a service
makes from a state, an outcome or a group are all listed. That the web pages
say each in Chinese is tests/unit/test_gateway_web.py's."""
from __future__ import annotations

import pytest
from nameko.exceptions import deserialize, serialize

from services.common.errors import Conflict, Forbidden, RateLimited
from services.common.reasons import Reason, UnlistedReason
from services.gateway.limits import RATE_GROUPS, RATE_REASONS
from services.identity.otp import REFUSALS, OtpOutcome
from services.signing.flow import STATE_REASONS, FlowState


def test_every_flow_state_outcome_and_rate_group_has_its_reason():
    assert set(STATE_REASONS) == set(FlowState)
    assert all(reason == f"flow_{state.value}" for state, reason in STATE_REASONS.items())
    assert set(REFUSALS) == set(OtpOutcome) - {OtpOutcome.ACCEPTED}
    assert all(reason == f"otp_{outcome.value}" for outcome, reason in REFUSALS.items())
    assert set(RATE_REASONS) == set(RATE_GROUPS)


def test_a_refusal_keeps_its_reason_and_detail_across_rpc():
    for sent in (Conflict(Reason.FLOW_WAITING, "expected completed"), Forbidden("not_a_party"),
                 RateLimited(Reason.OTP_RESEND_TOO_SOON, 42)):
        rebuilt = deserialize(serialize(sent))
        assert type(rebuilt) is type(sent)
        assert rebuilt.reason is sent.reason and rebuilt.message == sent.message
        assert rebuilt.to_dict() == sent.to_dict()
    waiting = Conflict(Reason.FLOW_WAITING, "expected completed")
    assert str(waiting) == "flow_waiting: expected completed"
    assert waiting.to_dict() == {"code": "conflict", "message": "flow_waiting", "detail": "expected completed"}
    assert Forbidden(Reason.NOT_A_PARTY).to_dict() == {"code": "forbidden", "message": "not_a_party"}
    assert RateLimited("otp_locked", "60").to_dict() == {"code": "rate_limited", "message": "otp_locked",
                                                         "retry_after": 60}


def test_an_unlisted_reason_fails_the_tests_but_still_crosses_rpc():
    with pytest.raises(UnlistedReason):
        Conflict("a sentence instead of a reason")
    data = serialize(Forbidden(Reason.NOT_A_PARTY))
    data["exc_args"] = ["a_reason_of_a_newer_service", ""]
    with pytest.warns(UnlistedReason):
        rebuilt = deserialize(data)
    assert type(rebuilt) is Forbidden and rebuilt.reason == "a_reason_of_a_newer_service"
    assert rebuilt.to_dict() == {"code": "forbidden", "message": "a_reason_of_a_newer_service"}
