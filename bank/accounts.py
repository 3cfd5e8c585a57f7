"""Merchant accounts: each merchant's corporate wallet (对公钱包) at the operator, one per merchant id.

The wallet's balance (``accounts.balance_fen``) changes only through :func:`post`, which writes a movement (kind,
signed amount, reference, the terminal, the business day) in the caller's transaction: the movements are the
wallet's statement, and their sum is its balance. Settlement credits one movement per batch (kind ``payment``,
reference the batch's first new voucher id), a refund one per refund (``refund``), a chain's daily sweep one on each
side (``sweep_out``, ``sweep_in``); another kind of credit posts under a kind of its own. A (merchant, kind,
reference) is posted once: posting it again is a unique-key violation, and the caller's transaction runs again.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select

from bank import sql
from bank.clock import now_ms
from bank.schema import accounts, movements, read_only
from wallet.card import china_day_text
from wire.models import AccountAnswer


def get(engine: Engine, merchant_id: str) -> AccountAnswer:
    """A merchant's account (all zero before its first settlement)."""
    with read_only(engine) as conn:
        row = conn.execute(select(accounts).where(accounts.c.merchant_id == merchant_id)).first()
    if row is None:
        return AccountAnswer(merchant_id=merchant_id, balance_fen=0, settled_fen=0, fee_fen=0, refunded_fen=0)
    return AccountAnswer.model_validate(dict(row._mapping))


def credit(conn: Connection, merchant_id: str, gross: int, fees: int, refunded: int = 0, *, kind: str = "credit",
           reference: str | None = None, terminal_id: str | None = None, at_ms: int | None = None) -> None:
    """Add to a merchant's account (settled ``gross``, ``fees``, ``refunded``), opening it on its first credit (a
    race to open it is a unique-key violation: the caller's transaction is run again), and post the net as one
    movement of ``kind`` (a fresh reference when none is given)."""
    net = gross - fees - refunded
    amounts = {"m": merchant_id, "net": net, "gross": gross, "fees": fees, "refunded": refunded}
    if sql.execute(conn, "account_credit", sql.account_credit, amounts).rowcount == 0:
        sql.execute(conn, "account_open", sql.account_open, amounts)
    _movement(conn, merchant_id, kind, reference or uuid.uuid4().hex, net, terminal_id, None, at_ms)


def post(conn: Connection, merchant_id: str, kind: str, reference: str, amount_fen: int, *, day: str | None = None,
         counterparty: str | None = None, terminal_id: str | None = None) -> None:
    """Move ``amount_fen`` (signed) into a merchant's wallet without touching its settled, fee and refund totals
    (a sweep, or a credit that is not a settled voucher), on business ``day`` (default: today's)."""
    amounts = {"m": merchant_id, "net": amount_fen, "gross": 0, "fees": 0, "refunded": 0}
    if sql.execute(conn, "account_credit", sql.account_credit, amounts).rowcount == 0:
        sql.execute(conn, "account_open", sql.account_open, amounts)
    _movement(conn, merchant_id, kind, reference, amount_fen, terminal_id, counterparty, None, day)


def _insert_movement() -> Any:
    return insert(movements).values(
        merchant_id=bindparam("m"), kind=bindparam("kind"), reference=bindparam("ref"), terminal_id=bindparam("tid"),
        counterparty=bindparam("other"), amount_fen=bindparam("amount"), day=bindparam("day"),
        created_ms=bindparam("t"))


def _movement(conn: Connection, merchant_id: str, kind: str, reference: str, amount_fen: int,
              terminal_id: str | None, counterparty: str | None, at_ms: int | None, day: str | None = None) -> None:
    t = now_ms() if at_ms is None else at_ms
    sql.execute(conn, "movement", _insert_movement, {
        "m": merchant_id, "kind": kind, "ref": reference, "tid": terminal_id, "other": counterparty,
        "amount": amount_fen, "day": day or china_day_text(t), "t": t})
