"""Chains and cash pooling (现金归集): a parent merchant, its stores, and the daily sweep of each pooling store's
day net into the parent's corporate wallet, exactly once.

The operator learns the chains from its settings (:attr:`bank.settings.OperatorSettings.chains`), as it learns
which terminal belongs to which merchant. A chain is one level deep: a parent is no store, a store is in one chain.

A sweep of business day D for a store (:func:`sweep`), in one transaction: hold the store's wallet (its account
row, so a posting in flight finishes first and one that follows waits), then move every movement of the store's
wallet up to the end of D that no sweep has moved on yet. Earlier days that were never swept are swept first, each
under its own day; what reached the wallet on an already swept day after its sweep (a batch that committed just
after midnight with an earlier settlement time) goes with D. The ``sweeps`` row (store, day) is the exactly-once
key: a second sweep of the day, a retry after a lost answer or a concurrent one finds it and moves nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from bank import accounts
from bank.clock import now_ms
from bank.schema import accounts as accounts_table
from bank.schema import movements, sweeps
from bank.store import Store
from wallet.card import china_day_text
from wallet.errors import InvalidInput
from wire.errors import BadRequest, Conflict, NotFound
from wire.statements import Sweep, SweepAnswer

SWEEP_KINDS = ("sweep_out", "sweep_in")
POOLS = ("daily",)
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
CHUNK = 500  # movement ids per UPDATE (SQLite bounds a statement's parameters)


@dataclass(frozen=True)
class Chain:
    """A parent merchant and its stores; ``pools`` is ``"daily"`` when the stores' takings move to the parent."""

    parent_id: str
    stores: tuple[str, ...]
    pools: str | None = None


class Chains:
    """The chains an operator knows. Raises :class:`InvalidInput` for a structure that is not one level deep."""

    def __init__(self, chains: Iterable[Chain] = ()) -> None:
        self.by_parent: dict[str, Chain] = {}
        self.parent_of: dict[str, str] = {}
        for c in chains:
            if c.parent_id in self.by_parent:
                raise InvalidInput(f"chain {c.parent_id} is given twice")
            if c.pools is not None and c.pools not in POOLS:
                raise InvalidInput(f"chain {c.parent_id}: pools must be one of {', '.join(POOLS)}")
            self.by_parent[c.parent_id] = c
            for s in c.stores:
                if s == c.parent_id:
                    raise InvalidInput(f"chain {s} lists itself as one of its stores")
                if s in self.parent_of:
                    raise InvalidInput(f"store {s} is in more than one chain")
                self.parent_of[s] = c.parent_id
        both = set(self.by_parent) & set(self.parent_of)
        if both:
            raise InvalidInput(f"a chain is one level deep: {', '.join(sorted(both))} is a parent and a store")

    def chain_of(self, merchant_id: str) -> Chain | None:
        """The chain ``merchant_id`` heads or belongs to."""
        parent = merchant_id if merchant_id in self.by_parent else self.parent_of.get(merchant_id)
        return None if parent is None else self.by_parent[parent]

    def pools(self, merchant_id: str) -> bool:
        """True for a store whose chain pools its takings."""
        chain = self.by_parent.get(self.parent_of.get(merchant_id, ""))
        return chain is not None and chain.pools is not None


def check_day(day: str) -> str:
    """``day`` when it is a YYYY-MM-DD date; :class:`BadRequest` otherwise."""
    try:
        if not DAY.fullmatch(day):
            raise ValueError(day)
        dt.date.fromisoformat(day)
    except ValueError:
        raise BadRequest(f"day {day!r} is not a date written YYYY-MM-DD") from None
    return day


def today() -> str:
    """The operator's business day now (China Standard Time)."""
    return china_day_text(now_ms())


def sweep(store: Store, chains: Chains, day: str, parent_id: str | None = None) -> SweepAnswer:
    """Sweep closed business day ``day`` for every pooling chain (or the chain of ``parent_id``): one transaction
    per store, each store's day moved exactly once. Idempotent; safe to run concurrently."""
    check_day(day)
    now = today()
    if day >= now:
        raise Conflict(f"business day {day} is not over at the operator (today is {now}): a day is swept once it "
                       "has closed", "day_open")
    if parent_id is not None:
        chain = chains.by_parent.get(parent_id)
        if chain is None:
            raise NotFound(f"{parent_id} is not the parent of a chain", "unknown_chain")
        if chain.pools is None:
            raise Conflict(f"chain {parent_id} does not pool its stores' takings", "chain_does_not_pool")
        todo = [chain]
    else:
        todo = [c for c in chains.by_parent.values() if c.pools is not None]
    done: list[Sweep] = []
    for chain in todo:
        for store_id in chain.stores:
            done.extend(store.write(_sweep_store, store_id, chain.parent_id, day))
    return SweepAnswer(date=day, sweeps=done, moved_fen=sum(s.amount_fen for s in done if not s.replayed))


def _sweep_store(conn: Connection, store_id: str, parent_id: str, day: str) -> list[Sweep]:
    """One store's sweep of ``day`` (and of the earlier days never swept), in the caller's transaction."""
    t = now_ms()
    # hold the store's wallet: a posting in flight commits first, the next waits (a row lock on PostgreSQL; SQLite's
    # write transaction already excludes every other writer)
    conn.execute(select(accounts_table.c.merchant_id).where(accounts_table.c.merchant_id == store_id)
                 .with_for_update())
    on_file = conn.execute(select(sweeps).where(sweeps.c.store_id == store_id, sweeps.c.day == day)).first()
    if on_file is not None:
        return [_record(on_file, replayed=True)]
    m = movements.c
    pending = conn.execute(select(m.id, m.day, m.amount_fen).where(
        m.merchant_id == store_id, m.sweep_day.is_(None), m.day <= day, m.kind.not_in(SWEEP_KINDS))
        .order_by(m.id)).all()
    earlier = sorted({r.day for r in pending if r.day < day})
    swept = {r[0] for r in conn.execute(select(sweeps.c.day).where(
        sweeps.c.store_id == store_id, sweeps.c.day.in_(earlier)))} if earlier else set()
    groups: dict[str, list[Any]] = defaultdict(list)
    groups[day] = []
    for r in pending:
        groups[r.day if r.day < day and r.day not in swept else day].append(r)
    out = []
    for d in sorted(groups):
        rows = groups[d]
        ids = [r.id for r in rows]
        marked = sum(conn.execute(update(movements).where(m.id.in_(ids[i:i + CHUNK]), m.sweep_day.is_(None))
                                  .values(sweep_day=d)).rowcount for i in range(0, len(ids), CHUNK))
        if marked != len(ids):  # cannot happen while the wallet is held; never move anything twice if it does
            raise Conflict(f"another sweep of store {store_id} moved some of its movements first: try again",
                           "sweep_race")
        amount = sum(r.amount_fen for r in rows)
        conn.execute(insert(sweeps).values(store_id=store_id, day=d, parent_id=parent_id, amount_fen=amount,
                                           movements=len(ids), created_ms=t))
        if amount:
            accounts.post(conn, store_id, "sweep_out", d, -amount, day=d, counterparty=parent_id)
            accounts.post(conn, parent_id, "sweep_in", f"{store_id}:{d}", amount, day=d, counterparty=store_id)
        out.append(Sweep(store_id=store_id, parent_id=parent_id, day=d, amount_fen=amount, movements=len(ids),
                         created_ms=t))
    return out


def _record(row: Any, replayed: bool) -> Sweep:
    return Sweep(store_id=row.store_id, parent_id=row.parent_id, day=row.day, amount_fen=row.amount_fen,
                 movements=row.movements, created_ms=row.created_ms, replayed=replayed)


def sweeps_of(conn: Connection, day: str, *, store_id: str | None = None, parent_id: str | None = None) -> list[Sweep]:
    """The sweeps on file for ``day``: one store's, or those into a parent's wallet."""
    q = select(sweeps).where(sweeps.c.day == day)
    q = q.where(sweeps.c.store_id == store_id) if store_id is not None else q.where(sweeps.c.parent_id == parent_id)
    return [_record(r, replayed=False) for r in conn.execute(q.order_by(sweeps.c.store_id))]
