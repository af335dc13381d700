"""A flow may name a party who has not registered yet: flow_parties.person_id
becomes nullable until that person joins.

Revision ID: signing_0005
Revises: signing_0004
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0005"
down_revision = "signing_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_parties") as batch:  # SQLite rebuilds the table
        batch.alter_column("person_id", existing_type=sa.String(36), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("flow_parties") as batch:
        batch.alter_column("person_id", existing_type=sa.String(36), nullable=False)
