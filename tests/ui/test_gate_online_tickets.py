"""Pilot test of the gate app with a ticket sold online: the admission reads as an online ticket in English and in
Chinese, nothing is charged, and the gate's day report counts the online entries in both languages."""

from __future__ import annotations

import asyncio

from textual.widgets import Static

from pos.gate.online_tickets import learn
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from pos.ui.history import ReportScreen
from tests.ui.conftest import FakeServices, runtime, showing, text_of, until
from wallet.card import china_day_text
from wallet.clock import now_ms
from wire.tickets import GateTicket

GARDEN_GATE = "ZZYG0001"  # a spot that sells tickets online (merchants.yaml)


def test_an_online_ticket_opens_the_gate_in_both_languages_and_shows_in_the_day_report(home: Home) -> None:
    wallet = home.cards.load("c0001").wallet_id
    gate = Gate(home, GARDEN_GATE)
    learn(gate.store, [GateTicket(order_id="TKPILOT00001", wallet_id=wallet, sku="adult",
                                  day=china_day_text(now_ms()), quantity=1, status="sold", used=0, used_here=0)])
    app = GateApp(runtime(home, GARDEN_GATE), gate, lang="en", services=FakeServices(), hold_s=30.0,
                  sync_interval=0)

    def shown(selector: str) -> str:
        return text_of(app.screen.query_one(selector, Static))

    async def scenario() -> None:
        async with app.run_test(size=(80, 30)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            answer = await asyncio.to_thread(app.runtime.broker.tap, "c0001")  # type: ignore[union-attr]
            await until(pilot, lambda: showing(app, GateResultScreen) and app.decisions == 1)
            assert answer["gate"]["code"] == "online" and answer["amount_fen"] == 0
            assert "OPEN" in shown("#word") and "online ticket 1 of 1: please enter" in shown("#reason")
            await pilot.press("f3")
            await until(pilot, lambda: "网络购票 已用 1/1，请通行" in shown("#reason"))
            assert "通行" in shown("#word")
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, GateScreen))
            await pilot.press("f6")
            await until(pilot, lambda: showing(app, ReportScreen) and "网络购票入园" in shown("#report"))
            assert "1 人次（1 单）" in shown("#report")
            await pilot.press("f3")
            await until(pilot, lambda: "Online tickets used" in shown("#report"))
            assert "entries 1 · orders 1" in shown("#report")
        app.gate.close()
        assert home.cards.load("c0001").balance_fen == 100_000  # nothing charged

    asyncio.run(scenario())
