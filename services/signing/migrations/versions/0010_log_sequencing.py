"""Evidence log appends are sequenced, then integrated in batches
(services/signing/evidence_log.py): the queue of sequenced records, and each
leaf's flow-event id so a flow event becomes one leaf only.

Leaves from before this revision get their event id from their own bytes.

Revision ID: signing_0010
Revises: signing_0009
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0010"
down_revision = "signing_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_sequenced",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ux_log_sequenced_event", "log_sequenced", ["event_id"], unique=True)
    op.add_column("log_leaves", sa.Column("event_id", sa.String(64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE log_leaves SET event_id = convert_from(leaf_data, 'UTF8')::json ->> 'event_id'")
    else:
        op.execute("UPDATE log_leaves SET event_id = json_extract(CAST(leaf_data AS TEXT), '$.event_id')")
    # not unique: leaves logged twice by the old append's race must not stop the upgrade
    op.create_index("ix_log_leaves_event", "log_leaves", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_log_leaves_event", "log_leaves")
    with op.batch_alter_table("log_leaves") as batch:
        batch.drop_column("event_id")
    op.drop_index("ux_log_sequenced_event", "log_sequenced")
    op.drop_table("log_sequenced")
