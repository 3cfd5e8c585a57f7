"""One business day for every report: a payment belongs to its voucher's China Standard Time day."""

from __future__ import annotations

import datetime as dt

from pos.ledger import payment_day
from pos.records import day_report, transactions
from pos.sync.reports import terminal_report
from tests.conftest import Taps
from wallet.card import CHINA_TZ

DAY_MS = 86_400_000
CST_MS = 8 * 3600 * 1000


def test_a_payment_just_before_or_after_china_midnight_is_on_its_voucher_day_in_both_reports(taps: Taps) -> None:
    """The vouchers are stamped one second either side of the next China midnight (the ledger entries themselves
    are written now): the terminal's sync report and the clerk's day report agree on the day of each."""
    now_ms = taps.ctx.now_ms()
    midnight = ((now_ms + CST_MS) // DAY_MS + 1) * DAY_MS - CST_MS  # the next 00:00 in China, as a UTC timestamp
    before = dt.datetime.fromtimestamp((midnight - 1000) / 1000, CHINA_TZ).date()  # the China day ending then
    after = before + dt.timedelta(days=1)
    card = taps.card()
    for stamp, amount in ((midnight - 1000, 300), (midnight + 1000, 500)):
        taps.ctx.now_ms = lambda stamp=stamp: stamp  # type: ignore[method-assign]
        assert taps.pay(card, amount).approved
    ledger = taps.ctx.ledger
    assert [payment_day(e) for e in ledger.entries(kind="payment")] == [before.isoformat(), after.isoformat()]
    for day, amount in ((before, 300), (after, 500)):
        report, vouchers, _ = terminal_report(ledger, day.isoformat())
        assert (report["count"], report["total_fen"]) == (1, amount), day
        clerk = day_report(ledger, day)
        assert (clerk["count"], clerk["total_fen"]) == (1, amount), day
        assert [t.voucher_id for t in transactions(ledger, day)] == list(vouchers)
    for far in (before - dt.timedelta(days=1), after + dt.timedelta(days=1)):
        assert terminal_report(ledger, far.isoformat())[0]["count"] == day_report(ledger, far)["count"] == 0
