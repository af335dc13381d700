"""Identity assurance and disputes: a flow records the assurance level it
requires and, once, whose identity was disputed and when; a party records
the level its signing certificate stated. ``cancelled`` is a final state, so
the one-live-flow-per-document index leaves cancelled flows out too.

Flows started before levels existed required none: they get
``self_declared``, so a flow already waiting for signatures can still finish.

Revision ID: signing_0006
Revises: signing_0005
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0006"
down_revision = "signing_0005"
branch_labels = None
depends_on = None

LIVE_FLOW = "state NOT IN ('declined', 'expired', 'voided', 'cancelled')"
LIVE_FLOW_BEFORE = "state NOT IN ('declined', 'expired', 'voided')"


def upgrade() -> None:
    op.drop_index("uq_flows_live_document", table_name="flows")
    with op.batch_alter_table("flows") as batch:
        batch.add_column(sa.Column("required_assurance", sa.String(32), nullable=False,
                                   server_default="self_declared"))
        batch.add_column(sa.Column("disputed_person_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("disputed_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("dispute_reason", sa.String(64), nullable=True))
    with op.batch_alter_table("flow_parties") as batch:
        batch.add_column(sa.Column("assurance_level", sa.String(32), nullable=True))
    op.create_index("uq_flows_live_document", "flows", ["document_id"], unique=True,
                    postgresql_where=sa.text(LIVE_FLOW), sqlite_where=sa.text(LIVE_FLOW))


def downgrade() -> None:
    op.drop_index("uq_flows_live_document", table_name="flows")
    with op.batch_alter_table("flow_parties") as batch:
        batch.drop_column("assurance_level")
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("dispute_reason")
        batch.drop_column("disputed_at")
        batch.drop_column("disputed_person_id")
        batch.drop_column("required_assurance")
    # a cancelled flow counts as live again under the old index: downgrading
    # with two flows of one document, one of them cancelled, fails here
    op.create_index("uq_flows_live_document", "flows", ["document_id"], unique=True,
                    postgresql_where=sa.text(LIVE_FLOW_BEFORE), sqlite_where=sa.text(LIVE_FLOW_BEFORE))
