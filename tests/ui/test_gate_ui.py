"""Pilot tests of the gate app: open, refused by anti-passback, refused by capacity, back to ready by itself; the
selection back to one ticket after each visitor, + - on a result, sold out, capacity messages that count right."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from pos.cards.manage import issue_cards
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from tests.ui.conftest import GATE, FakeServices, runtime, showing, text_of, until


def gate_app(home: Home, hold_s: float = 30.0) -> GateApp:
    return GateApp(runtime(home, GATE), Gate(home, GATE), lang="en", services=FakeServices(), hold_s=hold_s,
                   sync_interval=0)


async def tap(app: GateApp, pilot: Pilot[Any], card: str) -> dict[str, Any]:
    """Tap ``card`` and wait until its result shows."""
    seen = app.decisions
    answer = await asyncio.to_thread(app.runtime.broker.tap, card)  # type: ignore[union-attr]
    await until(pilot, lambda: showing(app, GateResultScreen) and app.decisions == seen + 1)
    return answer


def shown(app: GateApp, selector: str) -> str:
    return text_of(app.screen.query_one(selector, Static))


def test_gate_opens_then_returns_to_ready_on_one_ticket(home: Home) -> None:
    async def scenario() -> None:
        app = gate_app(home, hold_s=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            await pilot.press("down", "plus")  # child × 2
            assert (app.sku, app.quantity) == ("child", 2)
            answer = await tap(app, pilot, "c0001")
            screen = app.screen
            assert screen.decision.open and answer["gate"]["open"]
            assert "OPEN" in shown(app, "#word")
            assert "2 tickets paid" in shown(app, "#reason")
            assert "Entries today 1" in shown(app, "#result-stats")
            await until(pilot, lambda: showing(app, GateScreen), timeout=3)  # by itself
            assert "Entries today 1 · 1 place left" in shown(app, "#stats")  # capacity 3, 2 sold
            # the next visitor starts on one adult ticket, not on the last visitor's two child tickets
            assert (app.sku, app.quantity) == ("adult", 1)
            assert "Adult × 1" in shown(app, "#ready") and "¥70.00" in shown(app, "#quantity")
            declined = await tap(app, pilot, "c0002")  # c0002 holds ¥5.00: asked for one adult ticket, declined
            assert declined["reason"] == "insufficient_balance" and declined["amount_fen"] == 7000
            assert (app.sku, app.quantity) == ("adult", 1)
        app.gate.close()
        assert home.cards.load("c0001").balance_fen == 100_000 - 2 * 3500

    asyncio.run(scenario())


def test_plus_minus_on_a_result_start_the_next_visitor(home: Home) -> None:
    async def scenario() -> None:
        app = gate_app(home)  # the result would stay 30 s
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.runtime.broker.armed)
            await pilot.press("plus", "plus")
            assert (await tap(app, pilot, "c0001"))["gate"]["tickets"] == 3
            await pilot.press("plus")  # on the result: back to ready, two tickets for the next visitor
            await until(pilot, lambda: showing(app, GateScreen))
            assert app.quantity == 2 and "Quantity 2" in shown(app, "#quantity")
            assert "sold out" in shown(app, "#stats")
            await pilot.press("enter")  # ready ignores Enter
            await pilot.press("minus", "minus")  # not below 1
            assert app.quantity == 1
            await pilot.press("down")
            assert app.sku == "child"
        app.gate.close()

    asyncio.run(scenario())


def test_capacity_messages_count_right_and_sold_out_refuses_without_charging(home: Home) -> None:
    issue_cards(home, 4, 100_000, 2)  # c0003, c0004

    async def scenario() -> None:
        app = gate_app(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            assert "3 places left" in shown(app, "#stats") and "Tap the wallet to enter" in shown(app, "#ready")
            await pilot.press("plus", "plus", "plus")  # 4 tickets, 3 places
            assert "only 3 places left: choose 3 tickets or fewer" in shown(app, "#ready")
            refused = await tap(app, pilot, "c0001")
            assert refused["reason"] == "capacity" and refused["amount_fen"] == 0
            assert "only 3 places left" in shown(app, "#reason") and "choose 3 tickets or fewer" in shown(app,
                                                                                                          "#reason")
            await pilot.press("minus", "minus")  # a refusal keeps the selection (4): now 2
            assert app.quantity == 2
            assert (await tap(app, pilot, "c0001"))["gate"]["open"]
            await pilot.press("plus")  # next visitor: 2 tickets, 1 place left
            assert "only 1 place left: choose 1 ticket" in shown(app, "#ready")
            short = await tap(app, pilot, "c0003")
            assert short["message"] == "only 1 place left" and short["gate"]["next_step"] == "choose 1 ticket"
            assert "only 1 place left" in shown(app, "#reason") and "choose 1 ticket" in shown(app, "#reason")
            assert "1 place left" in shown(app, "#result-stats")
            await pilot.press("minus")
            assert app.quantity == 1
            assert (await tap(app, pilot, "c0003"))["gate"]["open"]
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, GateScreen))
            assert "SOLD OUT" in shown(app, "#ready") and "Tap the wallet" not in shown(app, "#ready")
            assert "sold out" in shown(app, "#stats")
            full = await tap(app, pilot, "c0004")  # refused before any charge
            assert full["reason"] == "capacity" and full["gate"]["remaining"] == 0
            assert "capacity is reached" in shown(app, "#reason") and "come another day" in shown(app, "#reason")
            await pilot.press("f3", "escape")
            await until(pilot, lambda: showing(app, GateScreen))
            assert "今日已售罄" in shown(app, "#ready") and "已售罄" in shown(app, "#stats")
            assert (await tap(app, pilot, "c0001"))["gate"]["code"] == "prepaid"  # a ticket holder still enters
        app.gate.close()
        assert home.cards.load("c0004").balance_fen == 100_000
        assert home.cards.load("c0003").balance_fen == 100_000 - 7000

    asyncio.run(scenario())


def test_gate_refuses_passback_and_capacity(home: Home) -> None:
    issue_cards(home, 4, 100_000, 3)  # c0003..c0005

    async def scenario() -> None:
        app = gate_app(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.runtime.broker.armed)
            assert (await tap(app, pilot, "c0001"))["gate"]["open"]
            refused = await tap(app, pilot, "c0001")
            assert refused["reason"] == "anti_passback"
            reason = shown(app, "#reason")
            assert "already entered" in reason and "buy a ticket for each visitor" in reason
            assert "STOP" in shown(app, "#word")
            for card in ("c0003", "c0004"):
                assert (await tap(app, pilot, card))["gate"]["open"]
            full = await tap(app, pilot, "c0005")
            assert full["reason"] == "capacity" and full["gate"]["remaining"] == 0
            assert "capacity is reached" in shown(app, "#reason")
            await pilot.press("f3")
            assert "今日游客已满" in shown(app, "#reason")
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, GateScreen))
        app.gate.close()

    asyncio.run(scenario())
