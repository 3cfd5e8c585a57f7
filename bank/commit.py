"""The last step of settlement: the verified vouchers of a batch judged against what is on file and written, with
the merchant's credit, the wallets' spending, revocations and the rejections, in one transaction."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update

from bank import accounts, denylist, double_spend, faults, sql
from bank import wallets as wallets_mod
from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.double_spend import WalletState
from bank.parse import Judged
from bank.reasons import DOUBLE_SPEND
from bank.schema import denylist as denylist_table
from bank.schema import load_tokens, rejections, vouchers, wallets

RememberNonce = Callable[..., None]


@dataclass(slots=True)
class Attempt:
    """One settlement request's transaction, over its attempts: ``t`` is the settlement time of every attempt, and
    ``replay`` is set once the connection dropped under an attempt (which may have committed before it dropped)."""

    t: int
    replay: bool = False

    def reconnected(self) -> None:
        self.replay = True


def commit_batch(conn: Connection, terminal: TerminalRecord, judged: list[Judged], candidates: list[Judged],
                 raw: list[bytes], *, fee_bps: int, remember_nonce: RememberNonce, fault: str | None,
                 attempt: Attempt, before_faults: Callable[[], None] | None = None) -> None:
    """Settle the verified ``candidates`` of a batch in the caller's transaction (re-run whole on a race or a
    dropped connection), with the request's nonce when it is still to be recorded.

    When the transaction runs again after a dropped connection, an earlier attempt may have committed: its nonce is
    then on file (not a replay by someone else), and the vouchers it settled (this terminal's, at this attempt's
    time) are answered ``settled`` again rather than ``duplicate``."""
    if terminal.pending_nonce is not None:
        remember_nonce(conn, terminal.terminal_id, *terminal.pending_nonce, own_replay=attempt.replay)
    for j in candidates:
        j.status, j.reason = None, None
    t = attempt.t
    new_rows: list[tuple[Any, ...]] = []
    gross = fees = 0
    if candidates:
        on_file = dict(sql.select_in(conn, "settled_bodies", sql.settled_bodies, [j.voucher_id for j in candidates]))
        wids = sorted({j.wallet_id for j in candidates if j.wallet_id})
        states = _wallet_states(conn, candidates, wids)
        if terminal.denylist_version > 0:
            _known_revocations(conn, states, terminal.denylist_version)
        days = sorted({j.day for j in candidates})
        daily: dict[tuple[str, str], int] = defaultdict(int)
        for wid, day, total in sql.select_in(conn, "daily_totals", sql.daily_totals, wids, days):
            daily[(wid, day)] = int(total)
        judge = double_spend.judge
        ours = _settled_by_earlier_attempt(conn, terminal, candidates, on_file, t) if attempt.replay else set()
        for j in candidates:
            assert j.body is not None and j.wallet_id is not None
            if not judge(j, states[j.wallet_id], on_file, daily):
                if j.status == "duplicate" and j.voucher_id in ours:
                    j.status = "settled"
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
            accounts.credit(conn, terminal.merchant_id, gross, fees, kind="payment", reference=new_rows[0][0],
                            terminal_id=terminal.terminal_id, at_ms=t)
    rejected = [{"terminal_id": terminal.terminal_id, "voucher_hash": j.vhash, "voucher_id": j.voucher_id,
                 "wallet_id": j.wallet_id, "amount_fen": j.amount_fen, "reason": j.reason, "day": j.day,
                 "created_ms": t} for j in judged if j.status == "rejected"]
    if rejected:
        conn.execute(sql.insert_ignore(conn, rejections), rejected)
    if before_faults is not None:
        before_faults()
    faults.inject(fault, conn, bool(new_rows))


def _settled_by_earlier_attempt(conn: Connection, terminal: TerminalRecord, candidates: list[Judged],
                                on_file: dict[str, str], t: int) -> set[str]:
    """The candidates an interrupted earlier attempt of this transaction settled: on file from this terminal at
    this attempt's settlement time."""
    ids = [j.voucher_id for j in candidates if j.voucher_id in on_file]
    if not ids:
        return set()
    rows = conn.execute(select(vouchers.c.voucher_id).where(
        vouchers.c.voucher_id.in_(ids), vouchers.c.terminal_id == terminal.terminal_id,
        vouchers.c.settled_ms == t)).all()
    return {r[0] for r in rows}


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
    return {w: WalletState(r[1], r[2], r[3], prove_loads=functools.partial(prove_loads, conn, w))
            for w, r in rows.items()}


def _known_revocations(conn: Connection, states: dict[str, WalletState], version: int) -> None:
    """Mark the revoked wallets whose revocation the terminal had (its denylist version ``version`` or earlier
    added them, and no later change up to it removed them). Only revoked wallets are looked up: nothing to read on
    a batch without one."""
    revoked = [w for w, s in states.items() if s.status != "active"]
    if not revoked:
        return
    last: dict[str, str] = {}
    for wid, action in conn.execute(select(denylist_table.c.wallet_id, denylist_table.c.action).where(
            denylist_table.c.wallet_id.in_(revoked), denylist_table.c.version <= version)
            .order_by(denylist_table.c.version)):
        last[wid] = action
    for wid, action in last.items():
        states[wid].known_revoked = action == "add"


def prove_loads(conn: Connection, wallet_id: str, w: WalletState, j: Judged) -> int:
    """Confirm the issued loads voucher ``j`` proves the card took, in load-counter order, and return their sum
    (added to ``w.loaded``). The card signed its balance after the payment; with what the wallet spent up to and
    including it, that is at least what was loaded onto it by then."""
    assert j.body is not None and w.loaded is not None
    c = j.body.counter
    before = conn.execute(select(func.coalesce(func.sum(vouchers.c.amount_fen), 0)).where(
        vouchers.c.wallet_id == wallet_id, vouchers.c.counter < c)).scalar() or 0
    spent_through = int(before) + sum(a for k, a in w.settled_now if k < c) + j.amount_fen
    needed = j.body.balance_after_fen + spent_through - w.loaded
    added = 0
    if needed <= 0:
        return 0
    pending = conn.execute(select(load_tokens.c.load_counter, load_tokens.c.amount_fen).where(
        load_tokens.c.wallet_id == wallet_id, load_tokens.c.status == "issued")
        .order_by(load_tokens.c.load_counter)).all()
    for counter, amount in pending:
        if added >= needed:
            break
        wallets_mod.settle_load(conn, wallet_id, counter, "confirmed")
        added += amount
    return added


def _update_wallets(conn: Connection, states: dict[str, WalletState], t: int) -> None:
    spent = [{"w": w, "d": s.spent_delta} for w, s in states.items() if s.spent_delta]
    if spent:
        sql.execute(conn, "wallet_spent", sql.wallet_spent, spent)
    for w, s in states.items():
        if s.revoke and s.status == "active":
            conn.execute(update(wallets).where(wallets.c.wallet_id == w)
                         .values(status="revoked", revoked_reason=DOUBLE_SPEND))
            denylist.add(conn, w, DOUBLE_SPEND, t)
