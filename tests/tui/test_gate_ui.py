"""Pilot tests of the gate app: open, refused by anti-passback, refused by capacity, back to ready by itself."""

from __future__ import annotations

import asyncio

from textual.widgets import Static

from pos.cards.manage import issue_cards
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from tests.tui.conftest import GATE, FakeServices, runtime, showing, text_of, until


def gate_app(home: Home, hold_s: float = 30.0) -> GateApp:
    return GateApp(runtime(home, GATE), Gate(home, GATE), lang="en", services=FakeServices(), hold_s=hold_s)


def test_gate_opens_then_returns_to_ready(home: Home) -> None:
    async def scenario() -> None:
        app = gate_app(home, hold_s=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            await pilot.press("down", "plus")  # child × 2
            assert (app.sku, app.quantity) == ("child", 2)
            answer = await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, GateResultScreen))
            screen = app.screen
            assert screen.decision.open and answer["gate"]["open"]
            assert "OPEN" in text_of(screen.query_one("#word", Static))
            assert "2 ticket(s) paid" in text_of(screen.query_one("#reason", Static))
            assert "Entries today 1" in text_of(screen.query_one("#result-stats", Static))
            await until(pilot, lambda: showing(app, GateScreen), timeout=3)  # by itself
            assert "places left 1" in text_of(app.screen.query_one("#stats", Static))  # capacity 3, 2 sold
        app.gate.close()
        assert home.cards.load("c0001").balance_fen == 100_000 - 2 * 3500

    asyncio.run(scenario())


def test_gate_refuses_passback_and_capacity(home: Home) -> None:
    issue_cards(home, 4, 100_000, 3)  # c0003..c0005

    async def scenario() -> None:
        app = gate_app(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.runtime.broker.armed)

            async def tap(card: str) -> dict:
                answer = await asyncio.to_thread(app.runtime.broker.tap, card)
                await until(pilot, lambda: showing(app, GateResultScreen) and app.decisions == n + 1)
                return answer

            n = 0
            assert (await tap("c0001"))["gate"]["open"]
            n += 1
            refused = await tap("c0001")
            n += 1
            assert refused["reason"] == "anti_passback"
            reason = text_of(app.screen.query_one("#reason", Static))
            assert "already entered" in reason and "buy a ticket for each visitor" in reason
            assert "STOP" in text_of(app.screen.query_one("#word", Static))
            for card in ("c0003", "c0004"):
                assert (await tap(card))["gate"]["open"]
                n += 1
            full = await tap("c0005")
            assert full["reason"] == "capacity" and full["gate"]["remaining"] == 0
            assert "capacity is reached" in text_of(app.screen.query_one("#reason", Static))
            await pilot.press("f3")
            assert "今日游客已满" in text_of(app.screen.query_one("#reason", Static))
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, GateScreen))
        app.gate.close()

    asyncio.run(scenario())
