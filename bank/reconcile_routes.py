"""The reconciliation routes: a terminal reports what it could not settle and hears what the books say of it; the
back office reads the whole picture (:mod:`bank.reconcile`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from bank.app import ADMIN, Terminal, _json_body, errors, parse_body
from bank.reconcile import DEFAULT_LIMIT, Reconciler
from bank.service import Operator
from wire.models import Reconciliation, TerminalReconciliation, UnresolvedReport


def add_reconcile_routes(app: FastAPI, op: Operator) -> None:
    """``POST /v1/reconciliation`` (signed, terminal) and ``GET /v1/admin/reconciliation`` (back office)."""
    rec = Reconciler(op.store)

    @app.post("/v1/reconciliation", response_model=TerminalReconciliation, responses=errors(403, 413),
              openapi_extra=_json_body(UnresolvedReport))
    async def report_unresolved(request: Request, term: Terminal) -> TerminalReconciliation:
        """Report every charge the terminal holds unresolved (``unresolved`` entries, and open intents whose wallet
        and counter it knows); what it reported before and no longer lists is dropped. The answer says, per item,
        what the operator's books show (a gap it explains, paid elsewhere, waiting, ...) and what happens next."""
        req = parse_body(UnresolvedReport, request.state.body)
        answer: TerminalReconciliation = await run_in_threadpool(rec.report, term, req.items)
        return answer

    @app.get("/v1/admin/reconciliation", dependencies=ADMIN, response_model=Reconciliation, responses=errors())
    def reconciliation(wallet_id: Annotated[str | None, Query(pattern=r"^\d{16}$")] = None,
                       limit: Annotated[int, Query(ge=1, le=100_000)] = DEFAULT_LIMIT) -> Reconciliation:
        """Gaps in every wallet's settled counters (or one wallet's), balance-after figures that do not chain, and
        every terminal's reported items matched with them. A scan of the settled vouchers, off the settlement
        path."""
        return rec.view(wallet_id, limit)
