"""End-of-day figures: the terminal's report from its ledger, and its reconciliation with the operator's report.

A payment belongs to the business day the operator counts it in: the China Standard Time day of its voucher's
timestamp, corrected by the terminal's clock error when that is over 5 minutes (:func:`pos.sync.clockskew.payment_day`
says how the terminal knows it); the clerk's day report (:mod:`pos.records`) too. A terminal with a right clock
gets the day of the timestamp, the day the card counted the payment in.

Beside the day, the reconciliation shows what is still unresolved whatever its day: the terminal's ``unresolved``
entries and the open charges a card took PAY for and never brought back, each with what the operator's books say
of it (a gap in the wallet's counters it explains, paid elsewhere, waiting...) and what happens next, and the gaps
in those wallets no terminal has reported (:mod:`pos.sync.unresolved`, :mod:`bank.reconcile`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx

from pos.home import Home
from pos.ledger import Ledger, LedgerMissing
from pos.sync import clockskew
from pos.sync.client import OperatorClient, RetryPolicy
from pos.sync.unresolved import report_unresolved, unresolved_items
from pos.sync.upload import SETTLED_STATUSES, operator_client
from wallet.errors import InvalidInput


def today(ahead_ms: int | None = None) -> str:
    """Today in China Standard Time (the business day of reports), on the clock corrected by ``ahead_ms`` (the
    terminal's learnt offset: :func:`pos.sync.clockskew.today`)."""
    return clockskew.today(ahead_ms).isoformat()


def terminal_report(ledger: Ledger, day: str, ahead_ms: int | None = None,
                    ) -> tuple[dict[str, Any], dict[str, tuple[int, str]], dict[str, int]]:
    """The terminal's own end-of-day report from its ledger, with per-voucher and per-refund detail; a payment
    counts on its business day (``ahead_ms``: the terminal's learnt offset, :func:`pos.sync.clockskew.payment_day`).
    The ledger is verified first: one that fails raises :class:`~pos.ledger.LedgerTampered` (nothing is
    reported)."""
    ledger.check()
    status: dict[str, tuple[str, str | None]] = {}
    claims: dict[str, dict[str, Any]] = {}
    settlements = list(ledger.entries(kind="settlement"))
    for e in settlements:
        status[e.voucher_id or ""] = (e.data.get("status", ""), e.data.get("reason"))
        if e.data.get("claim"):
            claims[e.voucher_id or ""] = e.data["claim"]
    days = clockskew.settled_days(settlements)
    vouchers: dict[str, tuple[int, str]] = {}
    discounts = {"count": 0, "total_fen": 0, "paid": 0, "flagged": 0, "refused": 0, "pending": 0}
    for e in ledger.entries(kind="payment"):
        if clockskew.payment_day(e, ahead_ms, days) != day:
            continue
        if e.data.get("discount"):  # an instant discount, and what the operator answered its claim
            discounts["count"] += 1
            discounts["total_fen"] += int(e.data["discount"]["discount_fen"])
            claim = claims.get(e.voucher_id or "") or {}
            discounts[claim.get("status", "pending")] += 1
            discounts["flagged"] += bool(claim.get("flag"))
        s, reason = status.get(e.voucher_id or "", ("pending", None))
        label = "settled" if s in SETTLED_STATUSES else "pending" if s == "pending" else f"rejected:{reason}"
        vouchers[e.voucher_id or ""] = (e.amount_fen, label)
    refunds = {e.data["refund_id"]: e.amount_fen for e in ledger.entries(kind="refund") if e.data.get("day") == day}
    reasons: dict[str, int] = defaultdict(int)
    for _, label in vouchers.values():
        if label.startswith("rejected:"):
            reasons[label.split(":", 1)[1]] += 1

    def part(pred: Callable[[str], bool]) -> dict[str, int]:
        sel = [a for a, s in vouchers.values() if pred(s)]
        return {"count": len(sel), "total_fen": sum(sel)}

    report = {
        "count": len(vouchers), "total_fen": sum(a for a, _ in vouchers.values()),
        "settled": part(lambda s: s == "settled"),
        "rejected": {**part(lambda s: s.startswith("rejected:")), "reasons": dict(reasons)},
        "pending": part(lambda s: s == "pending"),
        "refunds": {"count": len(refunds), "total_fen": sum(refunds.values())},
        "discounts": discounts,
    }
    return report, vouchers, refunds


def reconcile(home: Home, terminal_id: str, day: str | None = None, operator_url: str | None = None, *,
              client: OperatorClient | None = None, transport: httpx.BaseTransport | None = None,
              retry: RetryPolicy | None = None) -> dict[str, Any]:
    """Compare the terminal's end-of-day report with the operator's settlement report (the ``pos report`` object).

    The ledger is opened read-only (a read-only copy of a home can be reported); one that fails verification
    raises :class:`~pos.ledger.LedgerTampered` before the operator is asked.
    ``matches`` is true only when every voucher has the same amount and outcome on both sides (a voucher still in
    the outbox is a difference: it is not settled yet) and the refunds agree.
    """
    ahead = home.clock_ahead_ms(terminal_id)
    day = day or today(ahead)
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise InvalidInput(f"date {day!r} is not YYYY-MM-DD") from None
    cli, own = operator_client(home, terminal_id, operator_url, client, transport, retry)
    try:
        try:  # read only: a report changes nothing, and works on a read-only copy of a home
            ledger = home.ledger(terminal_id, readonly=True)
        except LedgerMissing:  # a terminal that never took a payment here: its (new, empty) ledger
            ledger = home.ledger(terminal_id)
        with ledger:
            mine, my_vouchers, my_refunds = terminal_report(ledger, day, ahead)
            local = {i["intent"]: i for i in unresolved_items(ledger)}
            answer = report_unresolved(home, terminal_id, ledger, cli, always=True)
        theirs = cli.report(day)
    finally:
        if own:
            cli.close()
    op_vouchers: dict[str, tuple[int, str]] = {}
    differences: list[dict[str, Any]] = []
    for vid, amount, label in theirs.get("vouchers", []):
        if vid is None:
            differences.append({"voucher_id": None, "field": "status", "terminal": None, "operator": label,
                                "note": "the operator rejected an upload that does not parse"})
            continue
        if vid in op_vouchers and op_vouchers[vid][1] == "settled":
            continue
        op_vouchers[vid] = (int(amount), label)
    for vid in sorted(set(my_vouchers) | set(op_vouchers)):
        t_amount, t_label = my_vouchers.get(vid, (None, "missing"))
        o_amount, o_label = op_vouchers.get(vid, (None, "missing"))
        if t_label != o_label:
            note = {("pending", "missing"): "not uploaded yet: run pos sync",
                    ("pending", "settled"): "settled by the operator but not recorded here: run pos sync",
                    ("missing", "settled"): "settled by the operator but absent from this ledger"}.get(
                (t_label, o_label), "outcomes differ")
            differences.append({"voucher_id": vid, "field": "status", "terminal": t_label, "operator": o_label,
                                "note": note})
        elif t_amount != o_amount:
            differences.append({"voucher_id": vid, "field": "amount_fen", "terminal": t_amount,
                                "operator": o_amount, "note": "amounts differ"})
    op_refunds = {rid: int(a) for rid, _, a in theirs.get("refund_list", [])}
    for rid in sorted(set(my_refunds) | set(op_refunds)):
        if my_refunds.get(rid) != op_refunds.get(rid):
            differences.append({"refund_id": rid, "field": "refund", "terminal": my_refunds.get(rid),
                                "operator": op_refunds.get(rid), "note": "refunds differ"})
    # flags: vouchers whose timestamp the operator reviews (docs/operator.md, Time); discounts: docs/campaigns.md
    operator = {k: theirs[k] for k in ("count", "total_fen", "settled", "rejected", "refunds", "flags", "discounts")
                if k in theirs and theirs[k] is not None}
    answered = answer or {"items": [], "gaps": []}
    unresolved = {"items": [{**{k: local.get(i["intent"], {}).get(k) for k in ("problem", "time")}, **i}
                            for i in answered["items"]], "gaps": answered["gaps"]}
    return {"terminal_id": terminal_id, "date": day, "terminal": mine, "operator": operator,
            "matches": not differences, "differences": differences, "unresolved": unresolved}
