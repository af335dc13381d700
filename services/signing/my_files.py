"""我的文件 in signing: the flows a person is a party to, from the party index.

Every change of a flow goes through :meth:`FlowStore.apply
<services.signing.flow_store.FlowStore.apply>`, which rewrites the flow's
rows of ``party_index`` (:func:`write_index`) in the same transaction: one
row per bound person with the status as that person sees it (their turn or
the other's). A person's page is then one range of that index, newest first
(services/common/listing.py).

What a list shows of a flow beyond its title (the amount, the due date, the
counterparty's name) is the document's, read from the documents service when
the flow starts and kept on the flow sealed (:func:`seal_summary`): the
document is locked from then on, so the copy cannot drift, and a name is
never stored in clear.
"""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import and_, false, func, not_, or_, select
from sqlalchemy.orm import Session

from services.common.clock import today_in_china
from services.common.database import dialect_insert
from services.common.listing import ListQuery, before_clause, collect, key
from services.common.masking import mask_name
from services.common.sealing import Keyring, open_json, seal_json
from services.signing.loan import ACTIVE, PART_REPAID, REPAID
from services.signing.models import FlowParty, FlowRow, PartyIndexRow

_UNFINISHED = ("draft", "waiting")


def party_status(row: FlowRow, position: int) -> str:
    """The flow as the party at ``position`` sees it (one of
    :data:`services.common.listing.STATUSES`; ``overdue`` is a matter of the
    day, :func:`list_files` says it)."""
    if row.disputed_at is not None and row.state != "cancelled":
        return "disputed"
    if row.state in _UNFINISHED:
        return "to_sign" if position == row.current_index else "waiting_others"
    if row.state == "completed" and row.loan_state in (PART_REPAID, REPAID):
        return row.loan_state  # 部分还款, 已还清 (services/signing/loans.py)
    return row.state


def _overdue(today: str):
    """Rows of a loan in force past its repayment date (YYYY-MM-DD compares as text)."""
    return and_(PartyIndexRow.status.in_(("completed", PART_REPAID)),
                func.coalesce(FlowRow.loan_state, "").in_((ACTIVE, PART_REPAID)),
                func.coalesce(FlowRow.repayment_date, "9999-12-31") < today)


def index_values(row: FlowRow, parties: Sequence[FlowParty]) -> list[dict]:
    """The flow's ``party_index`` rows: each bound person once, at the first place they hold."""
    rows: dict[str, dict] = {}
    for party in sorted(parties, key=lambda p: p.position):
        if party.person_id is not None and party.person_id not in rows:
            rows[party.person_id] = {"person_id": party.person_id, "flow_id": row.id, "position": party.position,
                                     "role": party.role, "status": party_status(row, party.position),
                                     "updated_at": row.updated_at}
    return list(rows.values())


def write_index(session: Session, row: FlowRow, parties: Sequence[FlowParty]) -> None:
    """Insert or update the flow's index rows, in the session's transaction."""
    values = index_values(row, parties)
    if values:
        insert = dialect_insert(session)(PartyIndexRow).values(values)
        session.execute(insert.on_conflict_do_update(
            index_elements=["person_id", "flow_id"],
            set_={"status": insert.excluded.status, "updated_at": insert.excluded.updated_at}))


def summary_of(document: dict) -> dict:
    """What a list shows of the document (documents' ``get_document_content``
    answer): its ``summary`` (amount, due date, each party's name by role), and
    a loan's terms (services/signing/loan.py)."""
    summary = document.get("summary") or {}
    return {"amount": summary.get("amount"), "due_date": summary.get("due_date"),
            "parties": [{"role": p.get("role"), "label": p.get("label"), "name": p.get("name")}
                        for p in summary.get("parties") or ()],
            "loan": summary.get("loan")}


def seal_summary(keyring: Keyring, flow_id: str, summary: dict) -> str:
    return seal_json(keyring, summary, "signing", "flow_summary", flow_id)


def open_summary(keyring: Keyring, flow_id: str, sealed: str | None) -> dict:
    return open_json(keyring, sealed, "signing", "flow_summary", flow_id)


def list_files(session: Session, keyring: Keyring, query: ListQuery) -> dict:
    """A page of the flows ``query.person_id`` is a party to (``{"items", "more"}``)."""

    today = today_in_china().isoformat()
    overdue = _overdue(today)

    def fetch(after, limit):
        statement = (select(PartyIndexRow, FlowRow).join(FlowRow, FlowRow.id == PartyIndexRow.flow_id)
                     .where(PartyIndexRow.person_id == query.person_id,
                            before_clause(PartyIndexRow.updated_at, PartyIndexRow.flow_id, after)))
        if query.statuses is not None:
            stored = sorted(query.statuses - {"overdue"})
            wanted = and_(PartyIndexRow.status.in_(stored), not_(overdue)) if stored else false()
            statement = statement.where(or_(wanted, overdue) if "overdue" in query.statuses else wanted)
        if query.template_id is not None:
            statement = statement.where(FlowRow.template_id == query.template_id)
        return session.execute(statement.order_by(PartyIndexRow.updated_at.desc(), PartyIndexRow.flow_id.desc())
                               .limit(limit)).all()

    def keep(found) -> dict | None:
        index, flow = found
        summary = open_summary(keyring, flow.id, flow.summary_sealed)
        others = [p for p in summary.get("parties") or () if p.get("label") != index.role]
        if not query.matches(flow.title, (p.get("name") for p in others)):
            return None
        late = (index.status in ("completed", PART_REPAID) and flow.loan_state in (ACTIVE, PART_REPAID)
                and (flow.repayment_date or "9999-12-31") < today)
        return {
            "kind": "flow", "id": flow.id, "flow_id": flow.id, "document_id": flow.document_id,
            "title": flow.title, "template_id": flow.template_id, "status": "overdue" if late else index.status,
            "my_role": index.role,
            "counterparties": [{"role": p.get("label"), "name": mask_name(p["name"]) if p.get("name") else None}
                               for p in others],
            "amount": summary.get("amount"), "due_date": flow.repayment_date or summary.get("due_date"),
            "created_at": key(flow.created_at, flow.id)["at"], "updated_at": key(index.updated_at, flow.id)["at"],
            "key": key(index.updated_at, flow.id),
        }

    return collect(fetch, keep, lambda found: (found[0].updated_at, found[0].flow_id), query)
