"""Objects are put after an intent is recorded and locked only once a committed
row names them (services/common/object_intents.py): the intents, and when each
stored object was locked.

Rows stored before this revision were locked by the put itself; they read as not
locked yet, and the reconciler notes their lock (S3 keeps the longer one).

Revision ID: signing_0009
Revises: signing_0008
"""
import sqlalchemy as sa
from alembic import op

from services.common.object_intents import create_intent_table

revision = "signing_0009"
down_revision = "signing_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_intent_table(op)
    op.add_column("stored_objects", sa.Column("retained_until", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stored_objects") as batch:
        batch.drop_column("retained_until")
    op.drop_table("object_intents")
