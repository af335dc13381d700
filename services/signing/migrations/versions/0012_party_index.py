"""我的文件: an index of flows by party, and what a list shows of a flow; and
a signed IOU's life: statements (还款确认书, 借款展期协议) are flows naming the
IOU's flow, which keeps the loan's standing.

The index is filled for the flows already there from ``flow_parties`` and
``flows`` (their status as each party sees it, as
``services/signing/my_files.py`` computes it); their template and summary
stay empty (the document's values are the documents service's, sealed).

Revision ID: signing_0012
Revises: signing_0011
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0012"
down_revision = "signing_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("template_id", sa.String(64), nullable=True))
    op.add_column("flows", sa.Column("summary_sealed", sa.Text(), nullable=True))
    op.add_column("flows", sa.Column("parent_flow_id", sa.String(36), nullable=True))
    op.add_column("flows", sa.Column("statement", sa.String(16), nullable=True))
    op.add_column("flows", sa.Column("loan_state", sa.String(16), nullable=True))
    op.create_index("ix_flows_parent_flow_id", "flows", ["parent_flow_id"])
    op.create_table(
        "party_index",
        sa.Column("person_id", sa.String(36), primary_key=True),
        sa.Column("flow_id", sa.String(36), sa.ForeignKey("flows.id"), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_party_index_person", "party_index", ["person_id", "updated_at", "flow_id"])
    # one row per (person, flow): the first place a person holds (a document names each person once)
    op.execute("""
        INSERT INTO party_index (person_id, flow_id, position, role, status, updated_at)
        SELECT p.person_id, p.flow_id, p.position, p.role,
               CASE WHEN f.disputed_at IS NOT NULL AND f.state <> 'cancelled' THEN 'disputed'
                    WHEN f.state IN ('draft', 'waiting') AND p.position = f.current_index THEN 'to_sign'
                    WHEN f.state IN ('draft', 'waiting') THEN 'waiting_others'
                    ELSE f.state END,
               f.updated_at
        FROM flow_parties p JOIN flows f ON f.id = p.flow_id
        WHERE p.person_id IS NOT NULL
          AND p.position = (SELECT MIN(q.position) FROM flow_parties q
                            WHERE q.flow_id = p.flow_id AND q.person_id = p.person_id)
    """)


def downgrade() -> None:
    op.drop_index("ix_party_index_person", "party_index")
    op.drop_table("party_index")
    op.drop_index("ix_flows_parent_flow_id", "flows")
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("loan_state")
        batch.drop_column("statement")
        batch.drop_column("parent_flow_id")
        batch.drop_column("summary_sealed")
        batch.drop_column("template_id")
