"""Merchant accounts: what settlement credits, fees and refunds have left to each merchant (fen)."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select

from bank import sql
from bank.schema import accounts, read_only
from wire.models import AccountAnswer


def get(engine: Engine, merchant_id: str) -> AccountAnswer:
    """A merchant's account (all zero before its first settlement)."""
    with read_only(engine) as conn:
        row = conn.execute(select(accounts).where(accounts.c.merchant_id == merchant_id)).first()
    if row is None:
        return AccountAnswer(merchant_id=merchant_id, balance_fen=0, settled_fen=0, fee_fen=0, refunded_fen=0)
    return AccountAnswer.model_validate(dict(row._mapping))


def credit(conn: Connection, merchant_id: str, gross: int, fees: int, refunded: int = 0) -> None:
    """Add to a merchant's account, opening it on its first credit (a race to open it is a unique-key violation:
    the caller's transaction is run again)."""
    amounts = {"m": merchant_id, "net": gross - fees - refunded, "gross": gross, "fees": fees, "refunded": refunded}
    if sql.execute(conn, "account_credit", sql.account_credit, amounts).rowcount == 0:
        sql.execute(conn, "account_open", sql.account_open, amounts)
