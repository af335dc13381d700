"""The issued CRL is kept with its number, so GET /pki/crl serves it until a
revocation or its nextUpdate draws near, instead of signing one per request.

Revision ID: identity_0004
Revises: identity_0003
"""
import sqlalchemy as sa
from alembic import op

revision = "identity_0004"
down_revision = "identity_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crl_numbers", sa.Column("der", sa.LargeBinary, nullable=True))
    op.add_column("crl_numbers", sa.Column("next_update", sa.DateTime, nullable=True))
    op.add_column("crl_numbers", sa.Column("revoked_count", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("crl_numbers") as batch:
        batch.drop_column("revoked_count")
        batch.drop_column("next_update")
        batch.drop_column("der")
