"""The operator's time rules for vouchers: which day a voucher counts toward, and which ones are flagged for review.

A terminal's clock is never trusted, but the card paid whatever the terminal's clock said, so a voucher is never
refused for good because of its timestamp. Instead:

- **The voucher's day.** The operator measures each terminal's clock at every signed request (the request time
  minus the clock correction the terminal says it applied, against the operator's own clock: ``skew_ms``, positive
  when the terminal is ahead). When the terminal is off by more than :data:`SKEW_WINDOW_MS`, the voucher's day (for
  the daily limit and the reports) is that of its timestamp minus the skew measured at upload; within the window the
  timestamp is taken as it is.
- **Flag ``review_timestamp``.** A voucher is settled (or rejected for some other reason) as usual, and flagged for
  review, when its timestamp is more than :data:`SKEW_WINDOW_MS` ahead of the operator's clock, more than
  :data:`PAST_WINDOW_MS` behind it, or it comes from a terminal whose measured skew is over the window. The flag is
  in the settlement answer, in the ``review_flags`` table and in the terminal's daily report, per wallet and
  terminal.

``future_timestamp`` is no longer a final rejection: a voucher rejected so by an older operator is judged again when
the terminal uploads it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bank import sql
from bank.auth import TerminalRecord
from bank.parse import Judged
from bank.reasons import FUTURE_TIMESTAMP
from bank.schema import rejections, review_flags
from wallet.card import china_day_text
from wire.signing import MAX_SKEW_MS

REVIEW_TIMESTAMP = "review_timestamp"
SKEW_WINDOW_MS = MAX_SKEW_MS  # 5 min: a clock off by less is right enough (network delay, drift)
PAST_WINDOW_MS = 30 * 24 * 3600 * 1000  # a voucher older than 30 days is reviewed (a terminal offline that long?)


def apply(judged: list[Judged], terminal: TerminalRecord, now: int) -> None:
    """Correct each open voucher's day by the terminal's measured skew and flag the ones to review."""
    skew = terminal.skew_ms
    skewed = abs(skew) > SKEW_WINDOW_MS
    for j in judged:
        if j.body is None:
            continue
        ts = j.timestamp_ms
        if skewed:
            j.day = china_day_text(ts - skew)
        if skewed or ts > now + SKEW_WINDOW_MS or ts < now - PAST_WINDOW_MS:
            j.flag = REVIEW_TIMESTAMP


def record(conn: Connection, terminal: TerminalRecord, judged: list[Judged], t: int) -> None:
    """In the batch's transaction: drop the final ``future_timestamp`` rejections of vouchers judged again, and file
    the flags of the vouchers this batch settled or rejected."""
    again = [j.vhash for j in judged if j.refiled]
    if again:
        conn.execute(rejections.delete().where(rejections.c.terminal_id == terminal.terminal_id,
                                               rejections.c.voucher_hash.in_(again),
                                               rejections.c.reason == FUTURE_TIMESTAMP))
    rows: list[dict[str, Any]] = [
        {"voucher_hash": j.vhash, "voucher_id": j.voucher_id, "wallet_id": j.wallet_id,
         "terminal_id": terminal.terminal_id, "merchant_id": terminal.merchant_id, "amount_fen": j.amount_fen,
         "day": j.day, "timestamp_ms": j.timestamp_ms, "skew_ms": terminal.skew_ms,
         "outcome": "settled" if j.status == "settled" else f"rejected:{j.reason}", "flag": j.flag,
         "created_ms": t}
        for j in judged if j.flag and j.status in ("settled", "rejected")]
    if rows:
        conn.execute(sql.insert_ignore(conn, review_flags), rows)
