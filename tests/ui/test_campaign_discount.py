"""The counter shows an instant discount (消费立减金) before the tap, in both languages, charges the net and shows
the discount with the result (the campaign as a sync records it: pos/sync/campaigns.py)."""

from __future__ import annotations

import asyncio

from textual.widgets import Static

from pos.home import Home
from pos.ui.clerk import ClerkApp, ResultPanel
from tests.ui.conftest import COUNTER, FakeServices, runtime, showing, text_of, until
from tests.ui.test_clerk import charge, payments

CAMPAIGN = {"campaign_id": "spring-5-off", "name_zh": "春季消费立减", "name_en": "Spring instant discount",
            "discount_fen": 500, "min_amount_fen": 3000, "per_wallet_per_day": 1, "start": "2000-01-01",
            "end": "2099-12-31", "share_fen": 1000}


def test_the_counter_shows_the_discount_before_the_tap_in_both_languages(home: Home) -> None:
    with home.ledger(COUNTER) as led:
        led.append("campaigns", data={"upload_seq": led.last_seq(), "day": "2026-05-01", "campaigns": [CAMPAIGN]})

    async def scenario() -> None:
        app = ClerkApp(runtime(home), lang="zh-CN", status_interval=0, services=FakeServices())
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "3", "5")
            line = app.screen.query_one("#discount", Static)
            await until(pilot, lambda: "立减 ¥5.00 · 实付 ¥30.00" in text_of(line))
            assert line.display
            await pilot.press("f3")  # English, before the tap
            await until(pilot, lambda: "instant discount ¥5.00 · to pay ¥30.00" in text_of(line))
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")  # type: ignore[union-attr]
            await until(pilot, lambda: showing(app, ResultPanel))
            assert "Instant discount: -¥5.00 · gross ¥35.00" in text_of(app.screen.query_one("#details", Static))
            await pilot.press("f3")
            assert "立减：-¥5.00 · 原价 ¥35.00" in text_of(app.screen.query_one("#details", Static))
            await pilot.press("enter", "2", "0", "enter")  # under the minimum: no discount line
            await until(pilot, lambda: app.runtime.broker.armed)  # type: ignore[union-attr]
            await pilot.pause(0.3)
            assert not app.screen.query_one("#discount", Static).display

    asyncio.run(scenario())
    assert [p.amount_fen for p in payments(home)] == [3000]
    assert home.cards.load("c0001").balance_fen == 100_000 - 3000
