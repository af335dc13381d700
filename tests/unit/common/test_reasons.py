"""Refusals name listed reasons (services/common/reasons.py): the errors keep
them, and their detail, across RPC."""
from __future__ import annotations

from nameko.exceptions import deserialize, serialize

from services.common.errors import Conflict, Forbidden, RateLimited
from services.common.reasons import Reason


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

