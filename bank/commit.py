"""The last step of settlement: the verified vouchers of a batch judged against what is on file and written, with
the merchant's credit, the wallets' spending, revocations and the rejections, in one transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, update

from bank import accounts, denylist, double_spend, faults, sql
from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.double_spend import WalletState
from bank.parse import Judged
from bank.reasons import DOUBLE_SPEND
from bank.schema import rejections, wallets

RememberNonce = Callable[[Connection, str, str, int], None]


def commit_batch(conn: Connection, terminal: TerminalRecord, judged: list[Judged], candidates: list[Judged],
                 raw: list[bytes], *, fee_bps: int, remember_nonce: RememberNonce, fault: str | None) -> None:
    """Settle the verified ``candidates`` of a batch in the caller's transaction (re-run whole on a race), with
    the request's nonce when it is still to be recorded."""
    if terminal.pending_nonce is not None:
        remember_nonce(conn, terminal.terminal_id, *terminal.pending_nonce)
    for j in candidates:
        j.status, j.reason = None, None
    t = now_ms()
    new_rows: list[tuple[Any, ...]] = []
    gross = fees = 0
    if candidates:
        on_file = dict(sql.select_in(conn, "settled_bodies", sql.settled_bodies, [j.voucher_id for j in candidates]))
        wids = sorted({j.wallet_id for j in candidates if j.wallet_id})
        states = _wallet_states(conn, candidates, wids)
        days = sorted({j.day for j in candidates})
        daily: dict[tuple[str, str], int] = defaultdict(int)
        for wid, day, total in sql.select_in(conn, "daily_totals", sql.daily_totals, wids, days):
            daily[(wid, day)] = int(total)
        judge = double_spend.judge
        for j in candidates:
            assert j.body is not None and j.wallet_id is not None
            if not judge(j, states[j.wallet_id], on_file, daily):
                continue
            fee = j.amount_fen * fee_bps // 10_000
            new_rows.append((
                j.voucher_id, j.wallet_id, j.body.counter, j.body_hash, raw[j.index], j.amount_fen,
                fee, 0, terminal.merchant_id, terminal.terminal_id, j.timestamp_ms, j.day, t))
            gross += j.amount_fen
            fees += fee
        if new_rows:
            # the hot insert goes straight to the driver: SQLAlchemy's per-row parameter processing would cost
            # as much as a signature check (same SQL, same parameters, both dialects)
            text, positional = sql.voucher_insert(conn.dialect)
            conn.exec_driver_sql(text, new_rows if positional else [dict(zip(sql.VOUCHER_COLUMNS, r))
                                                                    for r in new_rows])
        _update_wallets(conn, states, t)
        if new_rows:
            accounts.credit(conn, terminal.merchant_id, gross, fees)
    rejected = [{"terminal_id": terminal.terminal_id, "voucher_hash": j.vhash, "voucher_id": j.voucher_id,
                 "wallet_id": j.wallet_id, "amount_fen": j.amount_fen, "reason": j.reason, "day": j.day,
                 "created_ms": t} for j in judged if j.status == "rejected"]
    if rejected:
        conn.execute(sql.insert_ignore(conn, rejections), rejected)
    faults.inject(fault, conn, bool(new_rows))


def _wallet_states(conn: Connection, candidates: list[Judged], wids: list[str]) -> dict[str, WalletState]:
    rows = {r[0]: r for r in sql.select_in(conn, "wallet_states", sql.wallet_rows, wids, for_update=True)}
    missing = [w for w in wids if w not in rows]
    if missing:
        # A wallet the operator has no record of, but certified by its own CA: on file from now on, with its
        # loaded amount unknown (only the counter rule can catch its double spends).
        first = {j.wallet_id: j for j in reversed(candidates)}
        conn.execute(sql.insert_ignore(conn, wallets), [
            {"wallet_id": w, "tier": first[w].tier, "cert_der": first[w].cert_der, "loaded_fen": None,
             "spent_fen": 0, "online_fen": 0, "load_counter": 0, "status": "active", "created_ms": now_ms()}
            for w in missing])
        rows.update({r[0]: r for r in sql.select_in(conn, "wallet_states", sql.wallet_rows, missing,
                                                    for_update=True)})
    return {w: WalletState(r[1], r[2], r[3]) for w, r in rows.items()}


def _update_wallets(conn: Connection, states: dict[str, WalletState], t: int) -> None:
    spent = [{"w": w, "d": s.spent_delta} for w, s in states.items() if s.spent_delta]
    if spent:
        sql.execute(conn, "wallet_spent", sql.wallet_spent, spent)
    for w, s in states.items():
        if s.revoke and s.status == "active":
            conn.execute(update(wallets).where(wallets.c.wallet_id == w)
                         .values(status="revoked", revoked_reason=DOUBLE_SPEND))
            denylist.add(conn, w, DOUBLE_SPEND, t)
