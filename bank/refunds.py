"""Refunds: part or all of a settled voucher back to the wallet's online balance, once per refund id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from bank import accounts
from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.schema import refunds, vouchers, wallets
from bank.store import Store
from wallet.card import china_day_text
from wire.errors import BadRequest, Conflict, Forbidden, NotFound
from wire.models import RefundAnswer


def refund(store: Store, terminal: TerminalRecord, refund_id: str, voucher_id: str,
           amount_fen: int | None) -> RefundAnswer:
    """Refund part or all of a settled voucher to the wallet's online balance, once per ``refund_id``.

    Refund ids are scoped to the terminal that makes them: one starts with the terminal's id and a dash, so no
    terminal can take (and so block) another's. Only the merchant the voucher was paid to refunds it.

    The total refunded never exceeds the voucher's amount (a conditional update, atomic on both databases).
    Repeating a refund id with the same request answers the first result; with another request, 409.
    """
    if not refund_id or len(refund_id) > 80:
        raise BadRequest("refund_id must be 1 to 80 characters")
    if not refund_id.startswith(f"{terminal.terminal_id}-") or len(refund_id) == len(terminal.terminal_id) + 1:
        raise Forbidden(f"a refund id of terminal {terminal.terminal_id} starts with {terminal.terminal_id}-",
                        "foreign_refund_id")
    if amount_fen is not None and amount_fen <= 0:
        raise BadRequest("refund amount must be positive")

    def run(conn: Connection) -> RefundAnswer:
        prior = conn.execute(select(refunds).where(refunds.c.refund_id == refund_id)).first()
        v = conn.execute(select(vouchers).where(vouchers.c.voucher_id == voucher_id)).first()
        if prior is not None:
            if prior.voucher_id != voucher_id or prior.terminal_id != terminal.terminal_id or (
                    amount_fen is not None and amount_fen != prior.amount_fen):
                raise Conflict(f"refund {refund_id} was already made for another request", "refund_id_reused")
            return _answer(prior, v, replayed=True)
        if v is None:
            raise NotFound(f"voucher {voucher_id} is not settled", "not_settled")
        if v.merchant_id != terminal.merchant_id:
            raise Forbidden(f"voucher {voucher_id} was paid to another merchant", "wrong_payee")
        amount = amount_fen if amount_fen is not None else v.amount_fen - v.refunded_fen
        if amount <= 0:
            raise Conflict(f"voucher {voucher_id} is fully refunded", "over_refund")
        n = conn.execute(update(vouchers).where(and_(
            vouchers.c.voucher_id == voucher_id,
            vouchers.c.refunded_fen + amount <= vouchers.c.amount_fen)).values(
            refunded_fen=vouchers.c.refunded_fen + amount)).rowcount
        if n != 1:
            raise Conflict(f"refund of {_yuan(amount)} would exceed what is left of voucher {voucher_id} "
                           f"({_yuan(v.amount_fen - v.refunded_fen)})", "over_refund")
        t = now_ms()
        conn.execute(insert(refunds).values(refund_id=refund_id, voucher_id=voucher_id,
                                            terminal_id=terminal.terminal_id, merchant_id=v.merchant_id,
                                            wallet_id=v.wallet_id, amount_fen=amount,
                                            day=china_day_text(t), created_ms=t))
        conn.execute(update(wallets).where(wallets.c.wallet_id == v.wallet_id)
                     .values(online_fen=wallets.c.online_fen + amount))
        accounts.credit(conn, v.merchant_id, 0, 0, refunded=amount, kind="refund", reference=refund_id,
                        terminal_id=terminal.terminal_id, at_ms=t)
        row = conn.execute(select(refunds).where(refunds.c.refund_id == refund_id)).first()
        v2 = conn.execute(select(vouchers).where(vouchers.c.voucher_id == voucher_id)).first()
        return _answer(row, v2, replayed=False)

    return store.write(run)


def _answer(row: Any, v: Any, replayed: bool) -> RefundAnswer:
    total = v.refunded_fen if v is not None else row.amount_fen
    original = v.amount_fen if v is not None else row.amount_fen
    return RefundAnswer(refund_id=row.refund_id, voucher_id=row.voucher_id, status="refunded",
                        amount_fen=row.amount_fen, refunded_total_fen=total, remaining_fen=original - total,
                        wallet_id=row.wallet_id, day=row.day, created_ms=row.created_ms, replayed=replayed)


def _yuan(fen: int) -> str:
    """``¥5.00`` for 500 fen (the operator's messages speak yuan, as the people reading them do)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100}.{abs(fen) % 100:02d}"
