"""Pilot tests of the tester panel: cards listed, a tap on this terminal, faults for the next tap, the APDU trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static

from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.scenario import ScenarioFileError, ScenarioResult, parse_scenario, run_scenario
from pos.ui.clerk import ClerkApp, ResultPanel
from pos.ui.gate import GateApp
from pos.ui.tester import ScenarioScreen, TesterScreen, TraceScreen
from tests.ui.conftest import GATE, FakeServices, on_show, runtime, showing, text_of, until
from wallet.errors import CardBusy, StorageError


def clerk(home: Home) -> ClerkApp:
    return ClerkApp(runtime(home), lang="en", services=FakeServices(), status_interval=0)


async def open_panel(app: ClerkApp, pilot: Any) -> TesterScreen:
    """F2: the tester panel, on show."""
    await pilot.press("f2")
    await until(pilot, lambda: showing(app, TesterScreen))
    assert isinstance(app.screen, TesterScreen)
    return app.screen


def test_tester_panel_lists_cards_and_taps_one(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            panel = await open_panel(app, pilot)
            assert [c["card_id"] for c in panel.cards] == ["c0001", "c0002"]
            assert panel.query_one("#cards", DataTable).row_count == 2
            assert "not waiting" in text_of(panel.query_one("#tap-result", Static))
            await pilot.press("enter")  # no charge open: nothing is tapped
            assert app.runtime.last_trace == []
            await pilot.press("escape", "4", "2", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("enter")  # taps c0001 on the open charge
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved and on_show(app).outcome.amount_fen == 4200
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
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.reason.value == "card_removed"
            assert not on_show(app).outcome.pending_recovery  # pulled before PAY: not charged

            await pilot.press("enter", "enter", "f2")  # pay once with c0001, then with a fresh clone of it
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved
            await pilot.press("enter", "2", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            for _ in range(4):
                await pilot.press("f4")
            assert app.screen.fault == "clone"
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, ResultPanel))
            # offline, a clone with the same keys and state pays (the operator catches it at settlement)
            assert on_show(app).outcome.approved and on_show(app).outcome.amount_fen == 200
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
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.reason.value == "bad_signature"
        copies = [home.cards.load(i) for i in home.cards.ids() if home.cards.load(i).clone_of == "c0001"]
        assert len(copies) == 1 and copies[0].key_pem != home.cards.load("c0001").key_pem

    asyncio.run(scenario())


def test_a_tap_the_terminal_does_not_take_is_said_in_the_panel_s_language(home: Home) -> None:
    """The charge closed between Enter and the card reaching the field (the worker meets a terminal no longer
    waiting), a card held by another tap, any other failure: what failed and what to do, translated; the error's own
    words only as a second line where the first does not say it all."""
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            panel = await open_panel(app, pilot)
            panel._tap("c0001", None, None)  # the worker, with no charge open
            result = panel.query_one("#tap-result", Static)
            await until(pilot, lambda: "not tapped" in text_of(result))
            assert text_of(result) == ("c0001 not tapped: terminal CMGQ0001 is not waiting for a tap. Open a charge "
                                       "first (amount, Enter)")
            await pilot.press("f3")
            await until(pilot, lambda: "未碰卡" in text_of(result))
            assert "终端 CMGQ0001 未在等待碰卡" in text_of(result) and "not waiting" not in text_of(result)
            assert panel.tap_failed("c0001", CardBusy("c0001")).plain.startswith("c0001 正在另一次碰卡中")
            other = panel.tap_failed("c0001", StorageError("the disk holding /x is full: free some space")).plain
            assert other == "c0001：在终端 CMGQ0001 上碰卡失败\nthe disk holding /x is full: free some space"
            assert home.cards.load("c0001").counter == 0

    asyncio.run(scenario())


def test_enter_on_a_terminal_with_a_real_reader_says_there_is_no_mock_tap(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        app.runtime.broker = None  # what a terminal on a real reader has: no broker to present mock cards to
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4", "enter", "f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("enter")
            await until(pilot, lambda: any("real reader: no mock taps" in str(n.message) for n in app._notifications))
            assert app.runtime.last_trace == []

    asyncio.run(scenario())
VIA_UI = """\
name: via ui
operator: none
cards:
  alice: {tier: 4, balance: 100.00}
steps:
  - pay: {terminal: CMGQ0001, card: alice, amount: 42.00, via: ui, timeout: 20}
    expect: {status: approved, balance_after: 58.00}
  - pay: {terminal: CMGQ0001, card: alice, amount: 1.00, via: ui, timeout: 20}
"""


def test_a_scenario_pays_via_ui_on_the_running_counter(home: Home, tmp_path: Path) -> None:
    """The scenario's tap goes through the running clerk's socket: the clerk's screen shows its result; the step
    waits for the clerk to open the charge, and a charge of another amount is the step's error."""
    f = tmp_path / "via.yaml"
    f.write_text(VIA_UI, encoding="utf-8")

    async def scenario() -> ScenarioResult:
        app = clerk(home)
        app.runtime.listen()
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                run = asyncio.create_task(asyncio.to_thread(run_scenario, parse_scenario(f), home.root))
                await pilot.press("4", "2", "enter")  # the clerk opens the charge the step pays
                await until(pilot, lambda: showing(app, ResultPanel))
                assert on_show(app).outcome.approved and on_show(app).outcome.amount_fen == 4200
                await pilot.press("enter", "2", "enter")  # the clerk keys 2.00, the step pays 1.00
                return await asyncio.wait_for(run, 20)
        finally:
            app.runtime.close()

    result = asyncio.run(scenario())
    first, second = result.steps[1:]
    assert first.ok and first.actual["voucher"], first
    assert second.error is not None and "of 200 fen, the step pays 100 fen" in second.error
    alice = next(home.cards.load(i) for i in home.cards.ids() if home.cards.load(i).note == "scenario card")
    assert alice.balance_fen == 10_000 - 4200 - 200


def test_a_scenario_gate_step_via_ui_opens_the_running_gate(home: Home, tmp_path: Path) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text("name: g\noperator: none\ncards: {bob: {tier: 4, balance: 500}}\nsteps:\n"
                 "  - gate: {terminal: HQGT0001, card: bob, via: ui}\n    expect: {open: true, code: paid}\n"
                 "  - gate: {terminal: HQGT0001, card: bob, via: ui}\n    expect: {open: false, code: anti_passback}\n",
                 encoding="utf-8")

    async def scenario() -> ScenarioResult:
        app = GateApp(runtime(home, GATE), Gate(home, GATE), lang="en", services=FakeServices(), hold_s=0.2,
                      sync_interval=0)
        app.runtime.listen()
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                result = await asyncio.to_thread(run_scenario, parse_scenario(f), home.root)
                await until(pilot, lambda: app.decisions == 2)  # the gate's screen showed both
                return result
        finally:
            app.runtime.close()

    result = asyncio.run(scenario())
    assert result.ok, [(s.path, s.error, s.failures) for s in result.failed]


def test_via_ui_refuses_faults_and_a_gate_selection(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(VIA_UI.replace("via: ui, timeout: 20}\n    expect", "via: ui, tear_after: 2}\n    expect")
                 + "  - gate: {terminal: HQGT0001, card: alice, quantity: 2, via: ui}\n", encoding="utf-8")
    with pytest.raises(ScenarioFileError) as err:
        parse_scenario(f)
    assert [p.split(": ", 2)[1] for p in err.value.problems] == ["steps[0].pay", "steps[2].gate"]
    assert "leave out tear_after" in err.value.problems[0]


def test_the_panel_runs_a_scenario_file_and_shows_its_transcript(home: Home, tmp_path: Path) -> None:
    f = tmp_path / "mini.yaml"
    f.write_text("name: mini\nclock: 2026-03-01T09:00:00+08:00\noperator: none\ncards: {a: {tier: 4, balance: 10}}\n"
                 "steps:\n  - pay: {terminal: CMGQ0001, card: a, amount: 1}\n    expect: {balance_after: 9.00}\n"
                 "  - pay: {terminal: CMGQ0001, card: a, amount: 1}\n    expect: {balance_after: 9.00}\n",
                 encoding="utf-8")

    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            await pilot.press("s")
            await until(pilot, lambda: showing(app, ScenarioScreen))
            panel = app.screen
            assert panel.query_one("#scenario-list", DataTable).row_count == len(panel.shipped) >= 9
            assert "a scenic spot's morning rush" in [name for name, _ in panel.shipped]
            panel.query_one("#scenario-path", Input).value = str(f)
            await pilot.press("enter")
            await until(pilot, lambda: panel.passed is not None, timeout=30)
            assert panel.passed is False and panel.summary.startswith("mini")
            assert "    line 8: balance_after: expected 9.00, got 8.00" in panel.lines
            assert "FAIL: mini" in text_of(panel.query_one("#scenario-summary", Static))
            assert panel.where == ("mini.yaml", "scenario.temp_home")
        assert home.cards.ids() == ["c0001", "c0002"]  # it ran in a temporary home, not this terminal's

    asyncio.run(scenario())
