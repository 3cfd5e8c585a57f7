"""SQL of the settlement path, compiled once per dialect and run straight through the driver.

SQLAlchemy renders a statement (and a 500-value IN list) again at every execution, and processes every parameter
of every row: on the hot path that costs as much as a signature check. The statements are written once as
SQLAlchemy Core (one text for SQLite and PostgreSQL); their compiled text is cached here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from bank.schema import accounts, rejections, vouchers, wallets

VOUCHER_COLUMNS = ("voucher_id", "wallet_id", "counter", "body_hash", "voucher", "amount_fen", "fee_fen",
                    "refunded_fen", "merchant_id", "terminal_id", "timestamp_ms", "day", "settled_ms")
_voucher_inserts: dict[str, tuple[str, bool]] = {}


def voucher_insert(dialect: Any) -> tuple[str, bool]:
    """The INSERT of a settled voucher for ``dialect``, its parameters in :data:`VOUCHER_COLUMNS` order when the
    driver's style is positional (True) or by name; compiled once per dialect."""
    key = _dialect_key(dialect)
    hit = _voucher_inserts.get(key)
    if hit is None:
        stmt = insert(vouchers).compile(dialect=dialect, column_keys=list(VOUCHER_COLUMNS))
        if stmt.positional and tuple(stmt.positiontup or ()) != VOUCHER_COLUMNS:
            raise RuntimeError(f"voucher INSERT binds {stmt.positiontup}, expected {VOUCHER_COLUMNS}")
        hit = _voucher_inserts[key] = (str(stmt), bool(stmt.positional))
    return hit


_dml_texts: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def execute(conn: Connection, name: str, build: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """Run the statement ``build()`` (named bind parameters only) straight through the driver, once or for each
    parameter set: compiled once per dialect, without SQLAlchemy's per-execution parameter processing."""
    key = (_dialect_key(conn.dialect), name)
    hit = _dml_texts.get(key)
    if hit is None:
        compiled = build().compile(dialect=conn.dialect)
        hit = _dml_texts[key] = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
    sql, order = hit
    if order is not None:
        if isinstance(params, dict):
            return conn.exec_driver_sql(sql, tuple(params[k] for k in order))
        return conn.exec_driver_sql(sql, [tuple(p[k] for k in order) for p in params])
    return conn.exec_driver_sql(sql, params)


def wallet_spent() -> Any:
    return update(wallets).where(wallets.c.wallet_id == bindparam("w")).values(
        spent_fen=wallets.c.spent_fen + bindparam("d"))


def account_credit() -> Any:
    c = accounts.c
    return update(accounts).where(c.merchant_id == bindparam("m")).values(
        balance_fen=c.balance_fen + bindparam("net"), settled_fen=c.settled_fen + bindparam("gross"),
        fee_fen=c.fee_fen + bindparam("fees"), refunded_fen=c.refunded_fen + bindparam("refunded"))


def account_open() -> Any:
    return insert(accounts).values(merchant_id=bindparam("m"), balance_fen=bindparam("net"),
                                   settled_fen=bindparam("gross"), fee_fen=bindparam("fees"),
                                   refunded_fen=bindparam("refunded"))


def insert_ignore(conn: Connection, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


# The settlement path's lookups by key lists, written once as SQLAlchemy Core (one text for both databases).
def settled_bodies(ids: list[Any]) -> Any:
    return select(vouchers.c.voucher_id, vouchers.c.body_hash).where(vouchers.c.voucher_id.in_(ids))


def prior_rejections(hashes: list[Any]) -> Any:
    return select(rejections.c.voucher_hash, rejections.c.reason).where(
        rejections.c.voucher_hash.in_(hashes), rejections.c.terminal_id == bindparam("terminal_id"))


def daily_totals(wids: list[Any], days: list[Any]) -> Any:
    return (select(vouchers.c.wallet_id, vouchers.c.day, func.sum(vouchers.c.amount_fen))
            .where(vouchers.c.wallet_id.in_(wids), vouchers.c.day.in_(days))
            .group_by(vouchers.c.wallet_id, vouchers.c.day))


def wallet_rows(wids: list[Any]) -> Any:
    return select(wallets.c.wallet_id, wallets.c.loaded_fen, wallets.c.spent_fen, wallets.c.status).where(
        wallets.c.wallet_id.in_(wids))


IN_CHUNK = 512  # values per IN list (SQLite bounds the number of parameters of a statement)
_selects: dict[tuple[str, str, tuple[int, ...]], tuple[str, tuple[str, ...] | None]] = {}


def _dialect_key(dialect: Any) -> str:
    return f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"


@functools.lru_cache(maxsize=64)
def _bind_names(k: int, n: int) -> tuple[str, ...]:
    return tuple(f"in{k}_{m}" for m in range(n))


def select_in(conn: Connection, name: str, build: Any, values: Iterable[Any], *lists: Sequence[Any],
               for_update: bool = False, **params: Any) -> list[Any]:
    """The rows of ``build(values, *lists)`` (a SELECT with ``IN`` lists), ``values`` deduplicated and in chunks.

    SQLAlchemy renders a 500-value IN list again at every execution, which costs more than the query. So each
    query is compiled once per dialect and list sizes (rounded up to a power of two, padded by repeating a value,
    which an IN list does not notice) and its SQL text runs straight through the driver with ``params`` by name.
    ``for_update`` locks the rows on databases that lock rows (SQLite's write transaction already excludes others).
    """
    vals = list(dict.fromkeys(v for v in values if v is not None))
    others = [list(dict.fromkeys(v for v in lst if v is not None)) for lst in lists]
    if not vals or not all(others):
        return []
    out: list[Any] = []
    for i in range(0, len(vals), IN_CHUNK):
        in_lists = [vals[i:i + IN_CHUNK], *others]
        sizes = tuple(1 << (len(lst) - 1).bit_length() for lst in in_lists)
        sql, order = compiled_select(conn.dialect, name, build, sizes, for_update)
        bound = dict(params)
        for k, (lst, n) in enumerate(zip(in_lists, sizes, strict=True)):
            bound.update(zip(_bind_names(k, n), lst + [lst[-1]] * (n - len(lst)), strict=True))
        out.extend(conn.exec_driver_sql(sql, tuple(bound[b] for b in order) if order is not None else bound).all())
    return out


def compiled_select(dialect: Any, name: str, build: Any, sizes: tuple[int, ...],
                     for_update: bool = False) -> tuple[str, tuple[str, ...] | None]:
    """The SQL text of ``build`` with IN lists of ``sizes`` bind parameters, and the parameter order when the
    driver's style is positional; compiled once per dialect."""
    key = (_dialect_key(dialect), name + ":for_update" * for_update, sizes)
    hit = _selects.get(key)
    if hit is None:
        query = build(*[[bindparam(b) for b in _bind_names(k, n)] for k, n in enumerate(sizes)])
        if for_update and dialect.name != "sqlite":
            query = query.with_for_update()
        compiled = query.compile(dialect=dialect)
        hit = _selects[key] = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
    return hit


def precompile(dialect: Any) -> None:
    """Compile the settlement path's IN-list queries for every list size a batch can bring (see
    :func:`select_in`), as the operator starts rather than in its first batches."""
    n = 1
    while n <= IN_CHUNK:
        compiled_select(dialect, "settled_bodies", settled_bodies, (n,))
        compiled_select(dialect, "prior_rejections", prior_rejections, (n,))
        compiled_select(dialect, "wallet_states", wallet_rows, (n,), for_update=True)
        for days in (1, 2):
            compiled_select(dialect, "daily_totals", daily_totals, (n, days))
        n *= 2
    voucher_insert(dialect)
