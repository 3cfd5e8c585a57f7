"""A corporate wallet's statement for one business day: per store and terminal, gross, discounts, refunds, fees
and net, the day's sweep to the chain's parent, and for a parent its stores and what the sweeps brought it.

A statement counts what reached the wallet on the operator's business day D (China Standard Time): vouchers
settled on D (whatever day they were paid offline), refunds made on D, other credits posted on D. That is the day
a sweep moves, and it never changes once D is over. ``pos report`` instead compares a terminal's sales by the day
of each voucher. Reading only: a statement never sweeps (the CLI runs the sweep first for a closed day).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any, Literal

from sqlalchemy import Connection, case, func, select

from bank.chains import SWEEP_KINDS, Chains, check_day, sweeps_of, today
from bank.schema import accounts, movements, refunds, terminals, vouchers
from bank.store import Store
from wallet.clock import to_ms
from wire.errors import BadRequest, NotFound
from wire.statements import StatementAnswer, StatementLine, StoreStatement

DAY_MS = 86_400_000
LINE_KINDS = ("payment", "refund", *SWEEP_KINDS)  # movements shown from the vouchers and refunds, or as sweeps
FIELDS = ("count", "gross_fen", "discount_fen", "refund_count", "refunds_fen", "fee_fen", "net_fen")


def statement(store: Store, chains: Chains, merchants: Collection[str], merchant_id: str,
              day: str) -> StatementAnswer:
    """The statement of ``merchant_id``'s wallet for business ``day``. ``merchants`` are the merchants the operator
    has terminals for; any other merchant that is in no chain and has no wallet is a :class:`NotFound`."""
    check_day(day)
    now = today()
    if day > now:
        raise BadRequest(f"business day {day} has not begun at the operator (today is {now})")
    closed = day < now
    start = to_ms(dt.datetime.combine(dt.date.fromisoformat(day), dt.time()))
    chain = chains.chain_of(merchant_id)
    role: Literal["merchant", "store", "parent"] = (
        "merchant" if chain is None else "parent" if chain.parent_id == merchant_id else "store")

    def run(conn: Connection) -> StatementAnswer:
        if role == "merchant" and merchant_id not in merchants and conn.execute(
                select(accounts.c.merchant_id).where(accounts.c.merchant_id == merchant_id)).first() is None:
            raise NotFound(f"merchant {merchant_id} is not known to the operator", "unknown_merchant")
        if chain is not None and role == "parent":
            own = _store(conn, merchant_id, day, start, False, closed)
            stores = [own] if own.lines else []
            stores += [_store(conn, s, day, start, chain.pools is not None, closed) for s in chain.stores]
            sweeps_in = sweeps_of(conn, day, parent_id=merchant_id)
        else:
            stores = [_store(conn, merchant_id, day, start, chains.pools(merchant_id), closed)]
            sweeps_in = []
        b = movements.c
        opening, closing = conn.execute(select(
            func.coalesce(func.sum(case((b.day < day, b.amount_fen), else_=0)), 0),
            func.coalesce(func.sum(b.amount_fen), 0)).where(b.merchant_id == merchant_id, b.day <= day)).one()
        return StatementAnswer(
            merchant_id=merchant_id, date=day, closed=closed, role=role,
            parent_id=None if chain is None else chain.parent_id, pools=None if chain is None else chain.pools,
            stores=stores, totals=_total([s.totals for s in stores]), sweeps_in=sweeps_in,
            swept_in_fen=sum(s.amount_fen for s in sweeps_in), opening_fen=int(opening), closing_fen=int(closing),
            sweep_due=any(s.sweep_due for s in stores))

    answer: StatementAnswer = store.read(run)
    return answer


def _store(conn: Connection, merchant_id: str, day: str, start: int, pooling: bool, closed: bool) -> StoreStatement:
    """One store's lines: a line per terminal (settled vouchers and refunds), a line per other kind of credit."""
    v, r, m = vouchers.c, refunds.c, movements.c
    lines: dict[str, dict[str, Any]] = {}

    def line(key: str, kind: str, terminal_id: str | None) -> dict[str, Any]:
        return lines.setdefault(key, {"kind": kind, "terminal_id": terminal_id, **dict.fromkeys(FIELDS, 0)})

    for (tid,) in conn.execute(select(terminals.c.terminal_id).where(terminals.c.merchant_id == merchant_id)):
        line(tid, "payments", tid)
    for tid, n, paid, discount, fee in conn.execute(
            select(v.terminal_id, func.count(), func.sum(v.amount_fen), func.sum(v.discount), func.sum(v.fee_fen))
            .where(v.merchant_id == merchant_id, v.settled_ms >= start, v.settled_ms < start + DAY_MS)
            .group_by(v.terminal_id)):
        x = line(tid, "payments", tid)
        x.update(count=int(n), gross_fen=int(paid) + int(discount), discount_fen=int(discount), fee_fen=int(fee))
    for tid, n, amount in conn.execute(
            select(r.terminal_id, func.count(), func.sum(r.amount_fen))
            .where(r.merchant_id == merchant_id, r.day == day).group_by(r.terminal_id)):
        line(tid, "payments", tid).update(refund_count=int(n), refunds_fen=int(amount))
    for kind, n_in, amount_in, n_out, amount_out in conn.execute(
            select(m.kind, func.sum(case((m.amount_fen > 0, 1), else_=0)),
                   func.sum(case((m.amount_fen > 0, m.amount_fen), else_=0)),
                   func.sum(case((m.amount_fen < 0, 1), else_=0)),
                   func.sum(case((m.amount_fen < 0, -m.amount_fen), else_=0)))
            .where(m.merchant_id == merchant_id, m.day == day, m.kind.not_in(LINE_KINDS)).group_by(m.kind)):
        line(f"~{kind}", kind, None).update(count=int(n_in), gross_fen=int(amount_in), refund_count=int(n_out),
                                            refunds_fen=int(amount_out))
    out = []
    for key in sorted(lines):
        x = lines[key]
        x["net_fen"] = x["gross_fen"] - x["refunds_fen"] - x["fee_fen"]
        out.append(StatementLine(**x))
    on_file = sweeps_of(conn, day, store_id=merchant_id)
    sweep = on_file[0] if on_file else None
    return StoreStatement(merchant_id=merchant_id, lines=out, totals=_total(out), sweep=sweep,
                          sweep_due=pooling and closed and sweep is None)


def _total(lines: list[StatementLine]) -> StatementLine:
    return StatementLine(kind="total", terminal_id=None,
                         **{f: sum(getattr(x, f) for x in lines) for f in FIELDS})
