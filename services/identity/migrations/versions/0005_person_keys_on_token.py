"""Person keys on a PKCS#11 token (issue #16): a certificate names its key by
``key_ref`` (a KeyRef's JSON) instead of holding it sealed, so the sealed copy
and its KEK id may be empty; and the leases table, for the reconciler of keys
generated on the token but never recorded, which runs in one replica at a time.

Revision ID: identity_0005
Revises: identity_0004
"""
import sqlalchemy as sa
from alembic import op

from services.common.lease import create_lease_table

revision = "identity_0005"
down_revision = "identity_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("key_ref", sa.Text, nullable=True))
        batch.alter_column("private_key_sealed", existing_type=sa.Text, nullable=True)
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=True)
    create_lease_table(op)


def downgrade() -> None:
    # a certificate whose key is on a token has no sealed copy to go back to: refuse rather than lose it
    bind = op.get_bind()
    on_token = bind.execute(sa.text("SELECT count(*) FROM certificates WHERE private_key_sealed IS NULL")).scalar()
    if on_token:
        raise RuntimeError(f"{on_token} certificates have their keys on a PKCS#11 token only: cannot downgrade")
    op.drop_table("leases")
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=False)
        batch.alter_column("private_key_sealed", existing_type=sa.Text, nullable=False)
        batch.drop_column("key_ref")
