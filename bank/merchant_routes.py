"""The merchant back office over HTTP: a corporate wallet's statement for a business day, and the chains' daily
sweep (:mod:`bank.statements`, :mod:`bank.chains`). Both are back-office calls (the admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query

from bank.app import ADMIN, DAY, MERCHANT_ID, errors
from bank.service import Operator
from wire.statements import StatementAnswer, SweepAnswer


def add_merchant_routes(app: FastAPI, op: Operator) -> None:
    """Add ``GET /v1/admin/merchants/{merchant_id}/statements/{day}`` and ``POST /v1/admin/sweeps/{day}``."""

    @app.get("/v1/admin/merchants/{merchant_id}/statements/{day}", dependencies=ADMIN,
             response_model=StatementAnswer, responses=errors(404))
    def statement(merchant_id: MERCHANT_ID, day: DAY) -> StatementAnswer:
        """A corporate wallet's statement for one business day (what reached it that day, per store and terminal,
        and the day's sweeps). Reads only: a closed day not swept yet says ``sweep_due``."""
        return op.statement(merchant_id, day)

    @app.post("/v1/admin/sweeps/{day}", dependencies=ADMIN, response_model=SweepAnswer,
              responses=errors(404, 409, 413))
    def sweep(day: DAY, parent: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None) -> SweepAnswer:
        """Move each pooling store's net of closed business day ``day`` to its parent's wallet (every pooling
        chain, or the chain of ``parent``), exactly once: repeating it moves nothing more."""
        return op.sweep(day, parent)
