"""The gate when the terminal's own disk fails (issue 16): a tap whose charge cannot be written, or whose pass
cannot, is a STOP that says so, the reader loop goes on, and a visitor whose payment was recorded enters on it
next time instead of paying twice."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from pos.gate.ticket_gate import PAID, PREPAID, Gate
from pos.home import Home
from pos.ledger import Ledger
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from tests.ui.conftest import GATE, FakeServices, runtime, showing, until
from tests.ui.test_gate_ui import tap


def test_the_gate_says_a_storage_failure_keeps_reading_and_never_charges_twice(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = Ledger._append

    def no_intent(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
        if kind == "intent":
            raise sqlite3.OperationalError("database or disk is full")
        return real_append(led, kind, **fields)

    async def scenario() -> None:
        gate = Gate(home, GATE)
        app = GateApp(runtime(home, GATE), gate, lang="en", services=FakeServices(), hold_s=0.3, sync_interval=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            monkeypatch.setattr(Ledger, "_append", no_intent)  # the charge's intent cannot be written
            answer = await tap(app, pilot, "c0001")
            assert not answer["gate"]["open"] and answer["reason"] == "terminal_error"
            assert any("could not be written" in str(n.message) for n in app._notifications)
            monkeypatch.undo()
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed, timeout=5)
            monkeypatch.setattr(gate.store, "buy", lambda *a, **k: (_ for _ in ()).throw(
                sqlite3.OperationalError("database or disk is full")))  # paid and recorded; the pass is not
            answer = await tap(app, pilot, "c0001")
            assert not answer["gate"]["open"] and answer["reason"] == "terminal_error"
            monkeypatch.undo()
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed, timeout=5)
            answer = await tap(app, pilot, "c0001")  # the same visitor: enters on the ticket paid
            assert answer["gate"]["open"] and answer["gate"]["code"] == PREPAID
            assert isinstance(app.screen, GateResultScreen) and app.screen.decision.code != PAID
        gate.close()
        assert home.cards.load("c0001").balance_fen == 100_000 - 7000  # charged once

    asyncio.run(scenario())


def test_ctrl_q_at_the_gate_writes_a_kept_ticket_payment_or_warns_about_it(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ticket the card paid but the disk refused is kept; Ctrl+Q tries to write it, warns while the disk still
    refuses (Esc stays), and once space is freed a Ctrl+Q writes it, once, and quits."""
    from pos.payment.unwritten import KEPT
    from pos.ui.quit import QuitScreen
    from tests.ui.conftest import text_of

    real_append = Ledger._append
    full = {"on": True}

    def no_payment(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
        if kind == "payment" and full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_append(led, kind, **fields)

    def payments() -> int:
        with home.ledger(GATE, readonly=True) as led:
            return len(list(led.entries(kind="payment")))

    async def scenario() -> None:
        gate = Gate(home, GATE)
        app = GateApp(runtime(home, GATE), gate, lang="en", services=FakeServices(), hold_s=0.3, sync_interval=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
            monkeypatch.setattr(Ledger, "_append", no_payment)
            answer = await tap(app, pilot, "c0001")
            assert not answer["gate"]["open"] and answer.get("kept_voucher_id")
            await until(pilot, lambda: showing(app, GateScreen))
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen) and app.screen.drawn)
            title = text_of(app.screen.query_one("#quit-title"))
            assert "Not written to the ledger yet: 1 paid" in title and "¥70.00" in title
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, QuitScreen))
            assert app.is_running and app.kept() == (1, 7000)
            full["on"] = False  # space freed
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not app.is_running)
        gate.close()
        assert payments() == 1 and app.kept() == (0, 0)

    KEPT.clear()
    try:
        asyncio.run(scenario())
    finally:
        KEPT.clear()
