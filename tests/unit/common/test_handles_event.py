"""``handles_event``'s ``wanted``: an event its handler has nothing to do with is acknowledged with no
database work at all (identity hears every ``sms_sent``; only a phone code's concerns it)."""
from __future__ import annotations

from services.common.entrypoints import handles_event
from services.identity.service import IdentityService, _an_otp_outcome


class Unit:
    def __init__(self):
        self.calls: list[str] = []

    def already_processed(self, event_id, handler):
        self.calls.append("already_processed")
        return False

    def mark_processed(self, event_id, handler):
        self.calls.append("mark_processed")

    def commit(self):
        self.calls.append("commit")


class Handler:
    def __init__(self):
        self.db, self.ran = Unit(), []

    @handles_event("notify", "sms_sent", wanted=lambda event: event["data"].get("ref_type") == "otp")
    def on_sms_sent(self, event):
        self.ran.append(event["event_id"])


def test_an_unwanted_event_touches_no_database_and_a_wanted_one_is_marked_in_its_commit():
    handler = Handler()
    handler.on_sms_sent({"event_id": "e1", "data": {"ref_type": "flow"}})
    assert handler.ran == [] and handler.db.calls == []
    handler.on_sms_sent({"event_id": "e2", "data": {"ref_type": "otp"}})
    assert handler.ran == ["e2"] and handler.db.calls == ["already_processed", "mark_processed", "commit"]


def test_identity_wants_the_outcomes_of_its_codes_and_whatever_it_cannot_read():
    assert IdentityService.on_sms_sent  # the handler the predicate guards
    assert _an_otp_outcome({"data": {"ref_type": "otp", "ref_id": "c1"}})
    assert not _an_otp_outcome({"data": {"ref_type": "flow", "ref_id": "f1"}})
    assert not _an_otp_outcome({"data": {"ref_type": "rpc", "ref_id": None}})
    assert _an_otp_outcome({"data": "not a mapping"})  # the handler logs what it cannot parse
    assert _an_otp_outcome({"data": {"message_id": "m"}})
