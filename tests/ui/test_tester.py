"""Pilot tests of the tester panel: cards listed, a tap on this terminal, faults for the next tap, the APDU trace."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Static

from pos.home import Home
from pos.ui.clerk import ClerkApp, ResultScreen
from pos.ui.tester import TesterScreen, TraceScreen
from tests.ui.conftest import FakeServices, runtime, showing, text_of, until


def clerk(home: Home) -> ClerkApp:
    return ClerkApp(runtime(home), lang="en", services=FakeServices(), status_interval=0)


def test_tester_panel_lists_cards_and_taps_one(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            panel = app.screen
            assert [c["card_id"] for c in panel.cards] == ["c0001", "c0002"]
            assert panel.query_one("#cards", DataTable).row_count == 2
            assert "not waiting" in text_of(panel.query_one("#tap-result", Static))
            await pilot.press("enter")  # no charge open: nothing is tapped
            assert app.runtime.last_trace == []
            await pilot.press("escape", "4", "2", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("enter")  # taps c0001 on the open charge
            await until(pilot, lambda: showing(app, ResultScreen))
            assert app.screen.outcome.approved and app.screen.outcome.amount_fen == 4200
            await pilot.press("f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            assert app.screen.cards[0]["balance_fen"] == 100_000 - 4200
            assert app.screen.cards[0]["counter"] == 1
            await pilot.press("a")
            await until(pilot, lambda: showing(app, TraceScreen))
            trace = text_of(app.screen.query_one("#trace", Static))
            assert "SELECT" in trace and "PAY" in trace and "> 80 " in trace.replace("\n", " ")
            assert len(app.runtime.last_trace) >= 3

    asyncio.run(scenario())


def test_fault_for_the_next_tap_tears_it_and_a_clone_taps_offline(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("1", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("f4", "minus", "minus")  # pull the card after APDU 1
            assert app.screen.fault == "tear" and app.screen.faults().tear_after == 1
            assert "pull the card after APDU 1" in text_of(app.screen.query_one("#fault", Static))
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultScreen))
            assert app.screen.outcome.reason.value == "card_removed"
            assert not app.screen.outcome.pending_recovery  # pulled before PAY: not charged

            await pilot.press("enter", "enter", "f2")  # pay once with c0001, then with a fresh clone of it
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultScreen))
            assert app.screen.outcome.approved
            await pilot.press("enter", "2", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            for _ in range(4):
                await pilot.press("f4")
            assert app.screen.fault == "clone"
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultScreen))
            # offline, a clone with the same keys and state pays (the operator catches it at settlement)
            assert app.screen.outcome.approved and app.screen.outcome.amount_fen == 200
        clones = [i for i in home.cards.ids() if home.cards.load(i).clone_of == "c0001"]
        assert len(clones) == 1 and home.cards.load(clones[0]).counter == 2
        assert home.cards.load("c0001").counter == 1

    asyncio.run(scenario())


def test_a_copy_without_the_key_is_declined_for_its_signature(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            for _ in range(5):
                await pilot.press("f4")
            assert app.screen.fault == "clone_keyless"
            assert "copy without the key" in text_of(app.screen.query_one("#fault", Static))
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultScreen))
            assert app.screen.outcome.reason.value == "bad_signature"
        copies = [home.cards.load(i) for i in home.cards.ids() if home.cards.load(i).clone_of == "c0001"]
        assert len(copies) == 1 and copies[0].key_pem != home.cards.load("c0001").key_pem

    asyncio.run(scenario())
