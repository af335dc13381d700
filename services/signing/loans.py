"""A signed IOU's life in the signing service: 还款确认 and 展期.

Each change is a statement, and each statement is a document and a flow of
its own, named by the IOU's flow (``flows.parent_flow_id``):

* **还款确认** (:meth:`LoanEntrypoints.confirm_repayment`): the lender says
  what was repaid, when and how; signing checks it against the loan
  (:func:`services.signing.loan.check_repayment`: not above what is owed, not
  in the future, by the lender) and has documents make a 还款确认书 with the
  figures (interest first, then principal, what remains), which the lender
  alone signs, with willingness, like any document.
* **展期** (:meth:`LoanEntrypoints.propose_extension`): either party proposes
  a new repayment date and a rate (the document's own check holds it under
  the legal cap on the day); documents makes a 借款展期协议, the proposer signs
  it first and the other party accepts by signing it. The IOU's PDF is never
  touched.

While a statement is being signed no other may start (one change at a
time, so each is checked against the loan as it will stand). When the
statement's last signature is made, :meth:`LoanEntrypoints.settle_statement`
applies it to the IOU in the same transaction: the loan's standing
(``loan_state``: active, part_repaid, repaid) and, for an extension, its
repayment date; and an event of the IOU's flow (``loan_repayment_recorded``,
``loan_repaid``, ``loan_extended``) naming the statement and its signed PDF,
which becomes a leaf of the evidence log, a line of the IOU's history and of
its report, and what notify moves or ends the reminders by.

Where the loan stands is computed, never stored: :func:`position` replays
the completed statements over the terms the document stated
(:mod:`.loan`). A void by mutual consent stays as it is.
"""
from __future__ import annotations

import datetime as _dt
from datetime import timedelta

from sqlalchemy import select

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.clock import today_in_china
from services.common.entrypoints import rpc
from services.common.errors import Conflict, Forbidden, IntegrityError
from services.common.reasons import Reason
from services.signing import flow as F
from services.signing import loan as L
from services.signing import my_files
from services.signing.flow_store import to_domain
from services.signing.models import FlowParty, FlowRow
from services.signing.parties import IdentityDirectory, bind_parties

#: how long the other party has to accept an extension (and the lender to sign a 还款确认书)
STATEMENT_HOURS = 72
REPAYMENT_TEMPLATE, EXTENSION_TEMPLATE = "iou_repayment", "iou_extension"


def terms_of(summary: dict) -> L.Terms:
    loan = summary.get("loan")
    if not loan:
        raise Conflict(Reason.NOT_A_LOAN)
    return L.Terms.from_summary(loan)


def statement_of(summary: dict, statement_flow_id: str) -> L.Repayment | L.Extension:
    stated = summary["statement"]
    if stated["kind"] == "repayment":
        return L.Repayment(statement_flow_id, L.parse_amount(stated["amount"]),
                           _dt.date.fromisoformat(stated["date"]), stated["method"])
    return L.Extension(statement_flow_id, _dt.date.fromisoformat(stated["agreed_on"]),
                       _dt.date.fromisoformat(stated["repayment_date"]), L.parse_rate(stated.get("annual_rate")))


class LoanEntrypoints:
    """Mixed into the signing service (uses its ``flows``, ``documents``,
    ``identity``, ``ctx``, ``db`` and ``_start_signing``)."""

    # -- reading ---------------------------------------------------------------------------
    @rpc
    def loan(self, flow_id: str) -> dict:
        """Where the IOU of ``flow_id`` stands today: principal and interest
        outstanding, each repayment as applied, each extension, the
        repayment date in force, and the statement being signed, if any."""
        row, parties = self.flows.load(flow_id)
        summary, terms, statements = self._loan_of(row)
        lender, borrower = self._lender_and_borrower(summary, parties)
        pending = self._pending_statement(row.id)
        return dict(L.position(terms, statements, today_in_china()).to_dict(), flow_id=row.id,
                    lender_person_id=lender, borrower_person_id=borrower,
                    pending_statement=None if pending is None else {
                        "flow_id": pending.id, "statement": pending.statement, "state": pending.state,
                        "title": pending.title})

    # -- statements --------------------------------------------------------------------------
    @rpc
    def confirm_repayment(self, flow_id: str, person_id: str, amount: str, date: str, method: str) -> dict:
        """还款确认: the lender received ``amount`` (yuan) on ``date``
        (YYYY-MM-DD) by ``method`` (银行转账 …). Answers the 还款确认书's flow,
        for the lender to sign."""
        value, day = L.parse_amount(amount), L.parse_day(date, "date")
        row, parties, summary, terms, statements = self._open_loan(flow_id, person_id)
        lender, borrower = self._lender_and_borrower(summary, parties)
        L.check_lender(lender, person_id)
        today = today_in_china()
        after = L.check_repayment(L.position(terms, statements, today), statements, value, day, method, today)
        applied = after.applied[-1]
        values = dict(self._persons(row), initiator_role="出借方", iou_reference=self._reference(row),
                      amount=str(value), repaid_on=day.isoformat(), method=method,
                      interest_part=str(applied.interest), principal_part=str(applied.principal),
                      principal_after=str(applied.principal_after))
        statement = {"kind": "repayment", "amount": str(value), "date": day.isoformat(), "method": method}
        return self._start_statement(row, person_id, REPAYMENT_TEMPLATE, values, [{"role": "lender"}], statement)

    @rpc
    def propose_extension(self, flow_id: str, person_id: str, repayment_date: str,
                          annual_rate: str | None = None) -> dict:
        """展期: a party proposes the new ``repayment_date`` and the rate from the
        old date on (default: the rate in force). Answers the 借款展期协议's flow:
        the proposer signs first, the other party accepts by signing."""
        new_due = L.parse_day(repayment_date, "repayment_date")
        rate = L.parse_rate(annual_rate)
        row, parties, summary, terms, statements = self._open_loan(flow_id, person_id)
        lender, _ = self._lender_and_borrower(summary, parties)
        today = today_in_china()
        current = L.position(terms, statements, today)
        L.check_extension(current, new_due, today)
        rate = current.annual_rate if rate is None else rate
        by_lender = person_id == lender
        values = dict(self._persons(row), initiator_role="出借方" if by_lender else "借款方",
                      iou_reference=self._reference(row), principal_outstanding=str(current.principal_outstanding),
                      original_repayment_date=current.due.isoformat(), agreed_on=today.isoformat(),
                      repayment_date=new_due.isoformat(), annual_rate=str(rate))
        order = [{"role": "lender"}, {"role": "borrower"}] if by_lender else [{"role": "borrower"}, {"role": "lender"}]
        statement = {"kind": "extension", "agreed_on": today.isoformat(), "repayment_date": new_due.isoformat(),
                     "annual_rate": str(rate)}
        return self._start_statement(row, person_id, EXTENSION_TEMPLATE, values, order, statement)

    def settle_statement(self, statement_row: FlowRow, actor: str) -> None:
        """In the transaction of the statement's last signature: apply it to its IOU."""
        row, parties = self.flows.load(statement_row.parent_flow_id, lock=True)
        summary, terms, statements = self._loan_of(row)
        before = row.repayment_date
        position = L.position(terms, statements, today_in_china())
        statement = {"statement_flow_id": statement_row.id, "statement_sha256": statement_row.current_pdf_sha256}
        if statement_row.statement == "extension":
            row.repayment_date = position.due.isoformat()
            event = events.LOAN_EXTENDED
            statement.update(previous_repayment_date=before, loan=self._interest_schedule(terms, position.due))
        else:
            event = events.LOAN_REPAID if position.state == L.REPAID else events.LOAN_REPAYMENT_RECORDED
        row.loan_state = position.state
        self.flows.apply(row, parties, F.loan_event(to_domain(row, parties), event), actor, **statement)

    def loan_on_completion(self, row: FlowRow) -> events.InterestSchedule | None:
        """An IOU's last signature: its loan starts (``loan_state`` active), and
        flow_completed tells notify how its interest falls due. None for
        anything else."""
        if row.parent_flow_id is not None:
            return None
        loan = my_files.open_summary(self.ctx.keys.keyring, row.id, row.summary_sealed).get("loan")
        if not loan:
            return None
        row.loan_state = L.ACTIVE
        terms = L.Terms.from_summary(loan)
        return self._interest_schedule(terms, terms.due)

    def loan_events_made(self, row: FlowRow) -> dict[str, int]:
        """How many events of each loan type the IOU's statements made (its report waits for their leaves)."""
        if row.loan_state is None:
            return {}
        _, terms, statements = self._loan_of(row)
        made: dict[str, int] = {}
        for n, statement in enumerate(statements, start=1):
            if isinstance(statement, L.Extension):
                event = events.LOAN_EXTENDED
            elif L.position(terms, statements[:n], statement.on).state == L.REPAID:
                event = events.LOAN_REPAID
            else:
                event = events.LOAN_REPAYMENT_RECORDED
            made[event] = made.get(event, 0) + 1
        return made

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _interest_schedule(terms: L.Terms, due: _dt.date) -> events.InterestSchedule:
        return events.InterestSchedule(method=terms.method.value,
                                       interest_dates=tuple(d.isoformat() for d in terms.interest_dates(due)))

    def _loan_of(self, row: FlowRow) -> tuple[dict, L.Terms, list]:
        keyring = self.ctx.keys.keyring
        summary = my_files.open_summary(keyring, row.id, row.summary_sealed)
        terms = terms_of(summary)
        done = self.db.session.execute(
            select(FlowRow).where(FlowRow.parent_flow_id == row.id, FlowRow.state == F.FlowState.COMPLETED.value)
            .order_by(FlowRow.ended_at, FlowRow.id)).scalars()
        return summary, terms, [statement_of(my_files.open_summary(keyring, s.id, s.summary_sealed), s.id)
                                for s in done]

    def _open_loan(self, flow_id: str, person_id: str):
        """The IOU, locked, for a new statement by one of its parties."""
        row, parties = self.flows.load(flow_id, lock=True)
        if person_id not in {p.person_id for p in parties}:
            raise Forbidden(Reason.NOT_A_PARTY)
        if row.parent_flow_id is not None:
            raise Conflict(Reason.NOT_A_LOAN)
        if row.state != F.FlowState.COMPLETED.value:
            raise F.state_conflict(row.state, F.FlowState.COMPLETED)
        if row.disputed_at is not None:
            raise Conflict(Reason.IDENTITY_DISPUTED)
        summary, terms, statements = self._loan_of(row)
        if self._pending_statement(row.id) is not None:
            raise Conflict(Reason.STATEMENT_PENDING)
        return row, parties, summary, terms, statements

    def _pending_statement(self, flow_id: str) -> FlowRow | None:
        return self.db.session.execute(
            select(FlowRow).where(FlowRow.parent_flow_id == flow_id,
                                  FlowRow.state.in_([s.value for s in F.UNFINISHED_STATES]))).scalars().first()

    @staticmethod
    def _lender_and_borrower(summary: dict, parties: list[FlowParty]) -> tuple[str | None, str | None]:
        labels = {p.get("role"): p.get("label") for p in summary.get("parties") or ()}
        by_label = {p.role: p.person_id for p in parties}
        return by_label.get(labels.get("lender")), by_label.get(labels.get("borrower"))

    def _persons(self, row: FlowRow) -> dict:
        values = self.documents.get_document_content(document_id=row.document_id).get("values") or {}
        if not values.get("lender") or not values.get("borrower"):
            raise IntegrityError(f"flow {row.id}", "the IOU's document names no lender and borrower")
        return {"lender": values["lender"], "borrower": values["borrower"]}

    @staticmethod
    def _reference(row: FlowRow) -> str:
        signed = today_in_china(row.ended_at.replace(tzinfo=_dt.timezone.utc)) if row.ended_at else None
        when = f"{signed.year}年{signed.month}月{signed.day}日签署完成，" if signed else ""
        return f"《{row.title}》（{when}文件 SHA-256 {row.current_pdf_sha256}）"

    def _start_statement(self, row: FlowRow, person_id: str, template_id: str, values: dict, order: list[dict],
                         statement: dict) -> dict:
        rendered = self.documents.create_statement(template_id=template_id, values=values,
                                                   owner_person_id=person_id)
        content = self.documents.get_document_content(document_id=rendered["document_id"])
        named = (content.get("content") or {}).get("parties") or []
        parties = bind_parties(order, named, person_id, IdentityDirectory(self.identity))
        child, child_parties = self._start_signing(
            content, parties, person_id, AssuranceLevel(row.required_assurance), timedelta(hours=STATEMENT_HOURS),
            (content.get("content") or {}).get("title") or template_id, None, min_parties=1,
            parent_flow_id=row.id, statement=statement)
        return self.flows.flow_dict(child, child_parties)
