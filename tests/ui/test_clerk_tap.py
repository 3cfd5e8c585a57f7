"""Pilot tests of a charge in progress: Esc and Ctrl+Q before and after PAY, and a torn tap the clerk can follow.

The card is held at the APDU a test picks (an observer of the mock reader blocks after the card answered it), so
Esc and Ctrl+Q land before or after PAY by construction, never by timing.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from ecny_nfc.mock import Faults, MockReader
from pos.cards.manage import issue_cards
from pos.home import Home
from pos.payment import control as stages
from pos.payment.reasons import Reason
from pos.runtime import Runtime
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, QuitScreen, ResultPanel
from pos.ui.tester import TesterScreen
from tests.ui.conftest import COUNTER, FakeServices, make_config, on_show, showing, text_of, until
from wallet.protocol import INS_PAY, INS_READ_INFO

RECOVERY_S = 60  # the torn-tap wait here: long enough that no re-tap races it


@pytest.fixture
def patient_home(tmp_path: Path) -> Home:
    config = make_config(tmp_path)
    config.write_text(config.read_text(encoding="utf-8").replace("recovery_timeout_s: 1.5",
                                                                 f"recovery_timeout_s: {RECOVERY_S}"))
    h = Home(tmp_path / "home", config)
    issue_cards(h, 4, 100_000, 1)  # c0001
    return h


class Hold:
    """Blocks the terminal's thread right after the card answered the first command with instruction ``ins``."""

    def __init__(self, reader: MockReader, ins: int) -> None:
        self.ins = ins
        self.held = threading.Event()
        self.release = threading.Event()
        reader.observe(self._seen)

    def _seen(self, command: bytes, response: bytes | None) -> None:
        if command[1] == self.ins and not self.held.is_set():
            self.held.set()
            assert self.release.wait(20)


def clerk(home: Home, monotonic: Any = None) -> ClerkApp:
    rt = Runtime(home, COUNTER, MockReader(), **({"monotonic": monotonic} if monotonic else {}))
    return ClerkApp(rt, lang="en", services=FakeServices(), status_interval=0)  # type: ignore[arg-type]


async def start_charge(app: ClerkApp, pilot: Any, *keys: str) -> ChargePanel:
    await pilot.press(*keys, "enter")
    await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)  # type: ignore[union-attr]
    screen = on_show(app)
    assert isinstance(screen, ChargePanel)
    return screen


def countdown(screen: ChargePanel) -> str:
    return text_of(screen.query_one("#countdown", Static))


def kinds(home: Home) -> list[str]:
    with home.ledger(COUNTER) as ledger:
        return [e.kind for e in ledger.entries()]


def tap(app: ClerkApp, card: str = "c0001", faults: Faults | None = None) -> asyncio.Task[dict[str, Any]]:
    broker = app.runtime.broker
    assert broker is not None
    return asyncio.create_task(asyncio.to_thread(broker.tap, card, faults, 30))


def test_esc_on_a_slow_card_before_pay_cancels_at_once(home: Home) -> None:
    """F4×3 'slow card' then Esc while it is read: back to the counter, nothing charged, the intent void."""

    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await start_charge(app, pilot, "4")
            answer = tap(app, faults=Faults(delay=3600))
            await until(pilot, lambda: screen.control.stage == stages.READING)
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, EntryPanel))
            assert (await answer)["reason"] == "cancelled"
        assert kinds(home) == ["intent", "void"]
        assert (home.cards.load("c0001").balance_fen, home.cards.load("c0001").counter) == (100_000, 0)

    asyncio.run(scenario())


def test_esc_after_pay_says_completing_and_shows_the_approval(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            hold = Hold(app.runtime.reader, INS_PAY)  # type: ignore[arg-type]
            screen = await start_charge(app, pilot, "4")
            answer = tap(app)
            try:
                await until(pilot, hold.held.is_set)
                await pilot.press("escape")
                await until(pilot, lambda: "can no longer be cancelled" in countdown(screen))
                assert "completing the payment" in countdown(screen) and showing(app, ChargePanel)
            finally:
                hold.release.set()
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved  # type: ignore[attr-defined]
            assert (await answer)["status"] == "approved"
        assert kinds(home) == ["intent", "payment"]
        assert home.cards.load("c0001").balance_fen == 100_000 - 400

    asyncio.run(scenario())


def test_ctrl_q_before_pay_cancels_then_quits(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            hold = Hold(app.runtime.reader, INS_READ_INFO)  # type: ignore[arg-type]
            screen = await start_charge(app, pilot, "4")
            answer = tap(app)
            try:
                await until(pilot, hold.held.is_set)
                await pilot.press("ctrl+q")  # asks first: the charge goes on meanwhile
                await until(pilot, lambda: isinstance(app.screen, QuitScreen))
                assert not screen.quitting and not screen.cancel.is_set()
                await pilot.press("enter")
                await until(pilot, lambda: "cancelling" in countdown(screen))
                assert not app._exit  # it waits for the tap to stop
            finally:
                hold.release.set()
            await until(pilot, lambda: app._exit)
            assert (await answer)["reason"] == "cancelled"
        assert kinds(home) == ["intent", "void"]
        assert home.cards.load("c0001").counter == 0

    asyncio.run(scenario())


def test_ctrl_q_with_a_charge_open_asks_first_and_esc_goes_on(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await start_charge(app, pilot, "4")
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            assert "A charge is open: quitting cancels it" in text_of(app.screen.query_one("#quit-title", Static))
            await pilot.press("escape")  # the charge goes on
            await until(pilot, lambda: showing(app, ChargePanel))
            assert screen.in_progress and app.runtime.broker.armed  # type: ignore[union-attr]
            assert (await tap(app))["status"] == "approved"
            await until(pilot, lambda: showing(app, ResultPanel))
            assert not app._exit

    asyncio.run(scenario())


def test_ctrl_q_after_pay_shows_the_outcome_and_asks(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            hold = Hold(app.runtime.reader, INS_PAY)  # type: ignore[arg-type]
            screen = await start_charge(app, pilot, "4")
            answer = tap(app)
            try:
                await until(pilot, hold.held.is_set)
                await pilot.press("ctrl+q", "ctrl+q")  # asked, and confirmed with Ctrl+Q again
                await until(pilot, lambda: "quitting once the payment is complete" in countdown(screen))
            finally:
                hold.release.set()
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            assert not app._exit
            result = app.screen_stack[-2].panel
            assert isinstance(result, ResultPanel) and result.outcome.approved
            assert (await answer)["status"] == "approved"
            await pilot.press("enter")
            await until(pilot, lambda: app._exit)
        assert kinds(home) == ["intent", "payment"]

    asyncio.run(scenario())


def test_torn_tap_waits_for_the_same_wallet_with_one_countdown(patient_home: Home) -> None:
    """The card leaves after PAY: the screen asks for the same wallet and counts down the session's own wait (the
    clock is injected: it reads exactly the recovery wait); a re-tap through the tap broker finishes the charge,
    and both taps get the approval."""
    home = patient_home

    async def scenario() -> None:
        app = clerk(home, monotonic=lambda: 1000.0)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await start_charge(app, pilot, "2", "0")
            torn = tap(app, faults=Faults(tear_at=INS_PAY))
            await until(pilot, lambda: screen.control.stage == stages.RETAP)
            await until(pilot, lambda: f"{RECOVERY_S} s left" in countdown(screen))
            assert screen.control.deadline == 1000.0 + RECOVERY_S
            prompt = text_of(screen.query_one("#prompt", Static))
            assert prompt == "The wallet left too soon: hold the same wallet again"
            assert "Esc stop waiting" in text_of(app.screen.query_one("KeyBar", Static))
            again = await asyncio.to_thread(app.runtime.broker.tap, "c0001")  # type: ignore[union-attr]
            await until(pilot, lambda: showing(app, ResultPanel))
            outcome = on_show(app).outcome  # type: ignore[attr-defined]
            assert outcome.approved and outcome.torn and again["status"] == "approved"
            assert (await torn) == again
        assert kinds(home) == ["intent", "torn", "payment"]
        assert home.cards.load("c0001").balance_fen == 100_000 - 2000

    asyncio.run(scenario())


def test_giving_up_on_a_torn_tap_then_the_next_tap_names_the_amount(patient_home: Home) -> None:
    home = patient_home

    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await start_charge(app, pilot, "2", "0")
            torn = tap(app, faults=Faults(tear_at=INS_PAY))
            await until(pilot, lambda: screen.control.stage == stages.RETAP)
            await pilot.press("escape")  # the clerk gives up waiting
            await until(pilot, lambda: showing(app, ResultPanel))
            result = on_show(app)
            assert isinstance(result, ResultPanel) and result.outcome.reason is Reason.CARD_REMOVED
            details = text_of(result.query_one("#details", Static))
            settles = "the wallet may have been charged: the next tap of this wallet at this terminal settles it"
            assert settles in details
            assert (await torn)["pending_recovery"]
            await pilot.press("enter", "escape")

            await start_charge(app, pilot, "3")
            answer = await asyncio.to_thread(app.runtime.broker.tap, "c0001")  # type: ignore[union-attr]
            await until(pilot, lambda: showing(app, ResultPanel))
            details = text_of(app.screen.query_one("#details", Static))
            assert "recovered ¥20.00 from an earlier torn tap" in details
            assert answer["recovery"] == "recovered ¥20.00 from an earlier torn tap"
            assert answer["recovered_fen"] == [2000]
        assert home.cards.load("c0001").balance_fen == 100_000 - 2000 - 300

    asyncio.run(scenario())


def test_tester_panel_shows_the_card_left_and_taps_it_again(patient_home: Home) -> None:
    home = patient_home

    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await start_charge(app, pilot, "5")
            await pilot.press("f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            panel = app.screen
            assert isinstance(panel, TesterScreen)
            panel.fault, panel.fault_n = "tear", 5  # SELECT, READ INFO (+2 GET RESPONSE), PAY
            await pilot.press("enter")
            await until(pilot, lambda: screen.control.stage == stages.RETAP)
            result = panel.query_one("#tap-result", Static)
            await until(pilot, lambda: "c0001 left the field (torn tap): tap it again to finish" in text_of(result))
            await pilot.press("enter")  # the same card, no fault
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved  # type: ignore[attr-defined]
        assert kinds(home) == ["intent", "torn", "payment"]

    asyncio.run(scenario())
