"""Refunds from the terminal: asked of the operator once per (terminal, voucher, refund number), recorded here."""

from __future__ import annotations

from typing import Any

import httpx

from pos.home import Home
from pos.ledger import Ledger
from pos.sync.client import OperatorClient, RetryPolicy
from pos.sync.upload import SETTLED_STATUSES, operator_client, sync_once
from wallet.errors import EcnyError, InvalidInput


class RefundRefused(EcnyError):
    """The voucher cannot be refunded from this terminal (unknown here, or not settled)."""


def _settlement_of(ledger: Ledger, voucher_id: str) -> dict[str, Any] | None:
    """The data of the latest settlement entry for ``voucher_id``, or None."""
    entry = ledger.latest_settlement(voucher_id)
    return entry.data if entry else None


def request_refund(home: Home, terminal_id: str, voucher_id: str, amount_fen: int | None = None,
                   operator_url: str | None = None, *, client: OperatorClient | None = None,
                   transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None) -> dict[str, Any]:
    """Ask the operator to refund ``amount_fen`` (default: all that is left) of a voucher paid at this terminal.

    The refund id is derived from (terminal, voucher, number of refunds already recorded here), so repeating a
    refund after a crash or a lost answer returns the first result instead of refunding twice. The operator never
    refunds more than the original in total. Records one ``refund`` ledger entry.
    """
    if amount_fen is not None and amount_fen <= 0:
        raise InvalidInput("refund amount must be positive")
    cli, own = operator_client(home, terminal_id, operator_url, client, transport, retry)
    try:
        with home.ledger(terminal_id) as ledger:
            payment = ledger.payment(voucher_id)
            if payment is None:
                raise InvalidInput(f"no payment {voucher_id} at terminal {terminal_id}")
            if _settlement_of(ledger, voucher_id) is None:
                sync_once(home, terminal_id, client=cli)
            settlement = _settlement_of(ledger, voucher_id)
            if settlement is None or settlement.get("status") not in SETTLED_STATUSES:
                why = "not settled yet" if settlement is None else f"rejected ({settlement.get('reason')})"
                raise RefundRefused(f"voucher {voucher_id} cannot be refunded: {why}")
            refund_id = f"{terminal_id}-{voucher_id}-R{ledger.refund_count(voucher_id) + 1}"
            answer = cli.refund(refund_id, voucher_id, amount_fen)
            ledger.append("refund", voucher_id=voucher_id, wallet_id=payment.wallet_id, counter=payment.counter,
                          amount_fen=int(answer["amount_fen"]),
                          data={"refund_id": refund_id, "refunded_total_fen": answer["refunded_total_fen"],
                                "remaining_fen": answer["remaining_fen"], "day": answer["day"],
                                "created_ms": answer["created_ms"]})
    finally:
        if own:
            cli.close()
    return {"terminal_id": terminal_id, **answer}
