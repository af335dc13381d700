"""Signing flows, their parties, pending willingness-gated actions, stored
objects and job leases.

Revision ID: signing_0003
Revises: signing_0002
"""
import sqlalchemy as sa
from alembic import op

from services.common.lease import create_lease_table

revision = "signing_0003"
down_revision = "signing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("document_id", sa.String(36), nullable=False, index=True),
        sa.Column("document_sha256", sa.String(64), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("current_index", sa.Integer, nullable=False),
        sa.Column("initiator_person_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
        sa.Column("repayment_date", sa.String(10), nullable=True),
        sa.Column("reason", sa.String(400), nullable=True),
        sa.Column("void_requested_by", sa.String(36), nullable=True),
        sa.Column("void_confirmed_by", sa.Text, nullable=False),
        sa.Column("current_pdf_key", sa.String(200), nullable=False),
        sa.Column("current_pdf_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "flow_parties",
        sa.Column("flow_id", sa.String(36), sa.ForeignKey("flows.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("signature_field", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.DateTime, nullable=True),
        sa.Column("certificate_serial", sa.String(64), nullable=True),
        sa.Column("willingness_method", sa.String(16), nullable=True),
    )
    op.create_table(
        "pending_actions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("flow_id", sa.String(36), sa.ForeignKey("flows.id"), nullable=False, index=True),
        sa.Column("person_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("willingness_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.String(400), nullable=True),
        sa.Column("prepared", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "stored_objects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow_id", sa.String(36), sa.ForeignKey("flows.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("version_id", sa.String(100), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    create_lease_table(op)


def downgrade() -> None:
    for table in ("leases", "stored_objects", "pending_actions", "flow_parties", "flows"):
        op.drop_table(table)
