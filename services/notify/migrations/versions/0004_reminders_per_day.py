"""Several reminders of one kind per flow and person (weekly ``overdue``,
monthly ``interest_due``): the unique key of ``reminders`` becomes
(flow, person, kind, ``expires_at``), the day a reminder speaks about.

Existing rows already satisfy the wider key, so the upgrade only swaps the
constraint. The old schema holds one reminder per (flow, person, kind): a
downgrade keeps the latest of each (the one still ahead, after an extension)
and drops the others, the new kinds with them since the old code has no
template for them.

Revision ID: notify_0004
Revises: notify_0003
"""
import sqlalchemy as sa
from alembic import op

revision = "notify_0004"
down_revision = "notify_0003"
branch_labels = None
depends_on = None

OLD, NEW = "uq_reminders_flow_person_kind", "uq_reminders_flow_person_kind_day"


def upgrade() -> None:
    with op.batch_alter_table("reminders") as batch:  # SQLite rebuilds the table
        batch.drop_constraint(OLD, type_="unique")
        batch.create_unique_constraint(NEW, ["flow_id", "person_id", "kind", "expires_at"])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM reminders WHERE kind IN ('overdue', 'interest_due')"))
    op.execute(sa.text(
        "DELETE FROM reminders WHERE EXISTS (SELECT 1 FROM reminders later WHERE later.flow_id = reminders.flow_id"
        " AND later.person_id = reminders.person_id AND later.kind = reminders.kind"
        " AND later.send_at > reminders.send_at)"))
    with op.batch_alter_table("reminders") as batch:
        batch.drop_constraint(NEW, type_="unique")
        batch.create_unique_constraint(OLD, ["flow_id", "person_id", "kind"])
