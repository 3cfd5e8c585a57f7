"""Reconciliation: the operator's settlement report of one terminal for one China Standard Time day."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import Engine, and_, select

from bank import claims
from bank.auth import TerminalRecord
from bank.schema import read_only, refunds, rejections, review_flags, vouchers
from wire.errors import BadRequest
from wire.models import RefundTotals, RejectedTotals, ReportAnswer, SettledTotals


def report(engine: Engine, terminal: TerminalRecord, day: str) -> ReportAnswer:
    """What the operator settled, rejected and refunded for ``terminal`` on ``day`` (YYYY-MM-DD), and the vouchers
    flagged for review (:mod:`bank.timerules`), per wallet, and its discount claims (:mod:`bank.claims`)."""
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise BadRequest(f"day {day!r} is not YYYY-MM-DD") from None
    tid = terminal.terminal_id
    with read_only(engine) as conn:
        settled = conn.execute(select(vouchers.c.voucher_id, vouchers.c.amount_fen, vouchers.c.fee_fen)
                               .where(and_(vouchers.c.terminal_id == tid, vouchers.c.day == day))
                               .order_by(vouchers.c.voucher_id)).all()
        rejected = conn.execute(select(rejections.c.voucher_id, rejections.c.amount_fen, rejections.c.reason)
                                .where(and_(rejections.c.terminal_id == tid, rejections.c.day == day))
                                .order_by(rejections.c.id)).all()
        refunded = conn.execute(select(refunds.c.refund_id, refunds.c.voucher_id, refunds.c.amount_fen)
                                .where(and_(refunds.c.terminal_id == tid, refunds.c.day == day))
                                .order_by(refunds.c.created_ms)).all()
        flagged = conn.execute(select(review_flags.c.voucher_id, review_flags.c.wallet_id, review_flags.c.amount_fen,
                                      review_flags.c.outcome, review_flags.c.flag, review_flags.c.skew_ms)
                               .where(and_(review_flags.c.terminal_id == tid, review_flags.c.day == day))
                               .order_by(review_flags.c.id)).all()
    reasons: dict[str, int] = defaultdict(int)
    for r in rejected:
        reasons[r.reason] += 1
    s_total = sum(r.amount_fen for r in settled)
    fees = sum(r.fee_fen for r in settled)
    rejected_total = sum(r.amount_fen for r in rejected)
    return ReportAnswer(
        terminal_id=tid, merchant_id=terminal.merchant_id, date=day,
        count=len(settled) + len(rejected), total_fen=s_total + rejected_total,
        settled=SettledTotals(count=len(settled), total_fen=s_total, fee_fen=fees, net_fen=s_total - fees),
        rejected=RejectedTotals(count=len(rejected), total_fen=rejected_total, reasons=dict(reasons)),
        refunds=RefundTotals(count=len(refunded), total_fen=sum(r.amount_fen for r in refunded)),
        vouchers=[(r.voucher_id, r.amount_fen, "settled") for r in settled]
        + [(r.voucher_id, r.amount_fen, f"rejected:{r.reason}") for r in rejected],
        refund_list=[(r.refund_id, r.voucher_id, r.amount_fen) for r in refunded],
        flags=[(r.voucher_id, r.wallet_id, r.amount_fen, r.outcome, r.flag, r.skew_ms) for r in flagged],
        discounts=claims.day_totals(engine, tid, day),
    )
