"""The stored reminder schedule (SQLite, the embedded default): several reminders
of one kind per flow, planning twice harmless, re-planning over cancelled rows."""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.common.database import Database
from services.notify import reminder_book
from services.notify.reminders import LoanTerms, ReminderPolicy, RepaymentMethod, plan_reminders

SH = ZoneInfo("Asia/Shanghai")
POLICY = ReminderPolicy()
PEOPLE = ("p-lender", "p-borrower")
NOW = dt.datetime(2027, 1, 15, 10, 0, tzinfo=SH)
MONTHLY = LoanTerms(RepaymentMethod.MONTHLY_INTEREST,
                    tuple(dt.date(2027, month, 15) for month in range(2, 7)))


@pytest.fixture
def session(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'notify.db'}", None, "notify")
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def stored(session, status=None):
    return [(r.person_id, r.kind, r.send_at.date().isoformat()) for r in reminder_book.flow_reminders(session, "iou")
            if status is None or r.status == status]


def test_every_reminder_of_a_monthly_iou_is_stored_and_planning_twice_adds_nothing(session):
    plan = plan_reminders(dt.date(2027, 6, 15), NOW, POLICY, MONTHLY)
    assert reminder_book.schedule(session, "iou", PEOPLE, "借条", plan, NOW) == 2 * 4 + 2 * 7
    session.commit()
    assert reminder_book.schedule(session, "iou", PEOPLE, "借条", plan, NOW) == 0
    kinds = [kind for person, kind, _ in stored(session) if person == "p-borrower"]
    assert kinds == ["interest_due"] * 4 + ["due_soon", "due_today"] + ["overdue"] * 5


def test_a_due_today_planned_late_twice_on_its_day_is_stored_once(session):
    """Planned on the repayment day after nine, due_today goes at once: at a different moment each
    time it is planned, so the day it speaks about (not send_at) is what tells it apart."""
    due = dt.date(2027, 6, 15)
    first = dt.datetime(2027, 6, 15, 10, 0, tzinfo=SH)
    reminder_book.schedule(session, "iou", PEOPLE, "借条", plan_reminders(due, first, POLICY), first)
    later = first + dt.timedelta(hours=2)
    assert reminder_book.schedule(session, "iou", PEOPLE, "借条", plan_reminders(due, later, POLICY), later) == 0


def test_an_extension_plans_anew_over_the_cancelled_rows_and_leaves_sent_ones_alone(session):
    """Due 2027-03-15, extended on 03-20 by a week, after the first overdue reminder went: the new
    overdue weeks (03-23 ... 04-20) fall on four of the old ones (03-23 ... 04-13), whose cancelled
    rows are scheduled again with the new values; the one sent stays sent."""
    old_due, new_due = dt.date(2027, 3, 15), dt.date(2027, 3, 22)
    reminder_book.schedule(session, "iou", ["p-borrower"], "借条", plan_reminders(old_due, NOW, POLICY), NOW)
    sent_day = dt.datetime(2027, 3, 16, 9, 0, tzinfo=SH)
    for reminder in reminder_book.due(session, sent_day, 50):  # due_soon and due_today ended, overdue went
        reminder_book.move(session, reminder.id, "sent" if reminder.kind == "overdue" else "expired", sent_day)
    old_rows = {r.id for r in reminder_book.flow_reminders(session, "iou")}

    extended = dt.datetime(2027, 3, 20, 10, 0, tzinfo=SH)
    assert reminder_book.cancel(session, "iou", extended) == 4
    plan = plan_reminders(new_due, extended, POLICY)  # due_soon (03-19) is past already
    assert reminder_book.schedule(session, "iou", ["p-borrower"], "借条", plan, extended) == 1 + 5
    session.commit()

    rows = reminder_book.flow_reminders(session, "iou")
    assert [(r.kind, r.send_at.date().isoformat(), r.status) for r in rows] == [
        ("due_soon", "2027-03-12", "expired"), ("due_today", "2027-03-15", "expired"),
        ("overdue", "2027-03-16", "sent"), ("due_today", "2027-03-22", "scheduled"),
        *(("overdue", day, "scheduled") for day in ("2027-03-23", "2027-03-30", "2027-04-06", "2027-04-13",
                                                    "2027-04-20"))]
    scheduled = [r for r in rows if r.status == "scheduled"]
    assert len({r.id for r in scheduled} & old_rows) == 4  # the cancelled weeks, taken back
    assert {reminder_book.params_of(r)["due_date"] for r in scheduled} == {"2027-03-22"}


def test_a_flows_reminders_are_planned_in_one_read_and_one_write(session):
    """22 reminders of a monthly IOU: one query for the flow's rows and one batch of inserts, not a
    SELECT and an INSERT for each (11% of notify's CPU in bench/full_flow.py's load)."""
    from sqlalchemy import event

    statements = []
    engine = session.get_bind()
    record = lambda conn, cursor, statement, params, context, many: statements.append(statement.split()[0])  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        plan = plan_reminders(dt.date(2027, 6, 15), NOW, POLICY, MONTHLY)
        assert reminder_book.schedule(session, "iou", PEOPLE, "借条", plan, NOW) == 22
        assert statements == ["SELECT", "INSERT"], statements
        session.commit()
        statements.clear()
        assert reminder_book.schedule(session, "iou", PEOPLE, "借条", plan, NOW) == 0
        assert statements == ["SELECT"], statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
