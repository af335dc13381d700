"""``handles_event``'s ``wanted``: an event its handler has nothing to do with is acknowledged with no
database work at all (identity hears every ``sms_sent``; only a phone code's concerns it)."""
from __future__ import annotations

import pytest

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


class MarkedFirst:
    """A handler whose first commit holds all it owes (as notify's), on a real unit of work (SQLite)."""

    def __init__(self, engine):
        from sqlalchemy.orm import Session

        from services.common.outbox import UnitOfWork

        self.db = UnitOfWork(Session(bind=engine), publisher=None, service="notify")
        self.ran: list[str] = []
        self.fail_after_commit = self.fail_before_commit = False

    @handles_event("signing", "flow_sent", mark_first=True)
    def on_flow_sent(self, event):
        self.ran.append(event["event_id"])
        if self.fail_before_commit:
            raise ConnectionResetError("identity went away")
        self.db.commit()
        if self.fail_after_commit:
            raise ConnectionResetError("the vendor went away")


def test_a_mark_written_first_commits_with_the_handlers_first_commit(tmp_path):
    """``mark_first``: one insert finds or makes the mark (no read before it). A failure before the
    handler's first commit leaves no mark, so the event is handled again; after it, the redelivery
    finds the mark and the handler is not run again."""
    from sqlalchemy import create_engine, func, select

    from services.common.outbox import OUTBOX, PROCESSED

    engine = create_engine(f"sqlite:///{tmp_path / 'marks.db'}")
    OUTBOX.metadata.create_all(engine)

    def marks() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(PROCESSED)).scalar_one()

    handler = MarkedFirst(engine)
    handler.fail_before_commit = True
    with pytest.raises(ConnectionResetError):
        handler.on_flow_sent({"event_id": "e1", "data": {}})
    handler.db.rollback()  # as the worker's teardown does
    assert marks() == 0
    handler.fail_before_commit, handler.fail_after_commit = False, True
    with pytest.raises(ConnectionResetError):
        handler.on_flow_sent({"event_id": "e1", "data": {}})
    assert marks() == 1
    handler.fail_after_commit = False
    handler.on_flow_sent({"event_id": "e1", "data": {}})
    assert handler.ran == ["e1", "e1"] and marks() == 1
    handler.on_flow_sent({"event_id": "e2", "data": {}})
    assert handler.ran == ["e1", "e1", "e2"] and marks() == 2
    handler.db.close()
    engine.dispose()
