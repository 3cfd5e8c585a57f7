"""Background sync in both UIs, time injected: rounds with no key pressed, after each approved sale, failed rounds
(operator down, the terminal's storage failing) that end cleanly and recover on the next round and on F5; the end
of day before a sync says what is pending, not MISMATCH; the gate's history, sync and report."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.ledger import Ledger
from pos.sync.client import OperatorUnavailable, RetryPolicy
from pos.sync.services import OperatorServices
from pos.ui.app import TerminalApp
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, ResultPanel
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from pos.ui.history import HistoryScreen, ReportScreen
from tests.support.shop import shop_session
from tests.ui.conftest import COUNTER, GATE, FakeServices, runtime, showing, text_of, until


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedBackoff(RetryPolicy):
    def delay(self, attempt: int) -> float:
        return 10.0


def bar(app: TerminalApp) -> str:
    return text_of(app.screen.query_one("StatusBar", Static))


def report_text(app: TerminalApp) -> str:
    return text_of(app.screen.query_one("#report", Static))


def test_clerk_syncs_in_the_background_after_sales_and_day_end_says_pending(home: Home) -> None:
    clock = Clock()
    with shop_session(home) as shop:
        shop.provision(COUNTER)
        (card,) = shop.cards(1)
        shop.pay(COUNTER, card, 1230)

        async def scenario() -> None:
            app = ClerkApp(runtime(home), lang="en", services=OperatorServices(home, COUNTER, shop.url),
                           status_interval=0, clock=clock, sync_poll=0.01)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.status.pending_count == 1 and showing(app, EntryPanel))
                assert "pending 1 · ¥12.30" in bar(app) and "last sync never" in bar(app)
                # end of day before any sync: pending, and F5 (not a shell command) to sync now
                await pilot.press("f6")
                await until(pilot, lambda: showing(app, ReportScreen) and app.screen.reconciliation is not None)
                text = report_text(app)
                assert "Reconciliation: after the next sync" in text
                assert "1 payment not uploaded yet: F5 syncs now" in text
                assert "MISMATCH" not in text and "pos sync" not in text
                await pilot.press("f5")  # the report reads itself again after the sync
                await until(pilot, lambda: (app.screen.reconciliation or {}).get("matches") is True)
                assert "Reconciliation: matched" in report_text(app) and "not uploaded" not in report_text(app)
                await pilot.press("escape")
                # a payment taken meanwhile goes up once the interval has passed, with no key pressed
                shop.pay(COUNTER, card, 450)
                app.poll_status()
                await until(pilot, lambda: app.status.pending_count == 1)
                rounds = app.sync_loop.rounds
                await pilot.pause(0.1)
                assert app.sync_loop.rounds == rounds  # not due yet
                clock.now += 60
                await until(pilot, lambda: app.sync_loop.rounds == rounds + 1 and app.status.pending_count == 0)
                assert "pending 0 · ¥0.00" in bar(app) and "last sync never" not in bar(app)
                # an approved sale while online goes up at once: the clock does not move
                await pilot.press("2", "enter")
                await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)
                assert (await asyncio.to_thread(app.runtime.broker.tap, card))["status"] == "approved"
                await until(pilot, lambda: showing(app, ResultPanel) and app.sync_loop.rounds == rounds + 2)
                app.poll_status()
                await until(pilot, lambda: app.status.pending_count == 0 and app.status.pending_fen == 0)

            with home.ledger(COUNTER) as ledger:
                assert ledger.sync_status().pending_count == 0 and len(list(ledger.entries(kind="settlement"))) == 3

        asyncio.run(scenario())


class Flaky(FakeServices):
    """An operator whose sync fails as scripted (None: it works); each round starts "syncing 0/5"."""

    def __init__(self, script: list[Exception | None]) -> None:
        super().__init__(online=True)
        self.script = script

    def sync(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        if progress:
            progress(0, 5)
        failure = self.script.pop(0)
        if failure is not None:
            raise failure
        return super().sync(progress)


def test_failed_rounds_end_cleanly_and_the_next_round_and_f5_recover(home: Home) -> None:
    services = Flaky([OperatorUnavailable("operator down"), OSError(errno.ENOSPC, "No space left on device"), None,
                      sqlite3.OperationalError("database or disk is full"), None])
    clock = Clock()

    async def scenario() -> None:
        app = ClerkApp(runtime(home), lang="en", services=services, status_interval=0, clock=clock, sync_poll=0.01,
                       backoff=FixedBackoff())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))

            async def round_ends(n: int) -> None:
                await until(pilot, lambda: app.sync_loop.rounds == n and app.sync_progress is None)

            clock.now += 60
            await round_ends(1)
            assert app.sync_failure == "offline" and not app.status.online
            assert "offline, retrying in 10 s" in bar(app) and "syncing" not in bar(app)
            clock.now += 4
            assert app.sync_note() == ("offline, retrying in 6 s", "bold yellow")
            clock.now += 6
            await round_ends(2)  # the disk under the ledger is full: the round ends, nothing is left "syncing 0/5"
            assert app.sync_failure == "disk" and "storage error, retrying in 10 s" in bar(app)
            assert "syncing" not in bar(app) and app.status.progress == ""
            await pilot.press("f5")  # space freed: F5 works at once
            await round_ends(3)
            assert app.sync_failure is None and "denylist v0" in bar(app) and services.syncs == 1
            clock.now += 60
            await round_ends(4)
            assert app.sync_failure == "disk" and "retrying in 10 s" in bar(app)
            clock.now += 10  # the next round, by itself
            await round_ends(5)
            assert app.sync_failure is None and services.syncs == 2 and "retrying" not in bar(app)

    asyncio.run(scenario())


def test_the_gate_has_history_sync_and_a_day_report(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    with shop_session(home) as shop:
        shop.provision(GATE)
        (card,) = shop.cards(1)

        async def scenario() -> None:
            app = GateApp(runtime(home, GATE), Gate(home, GATE), lang="en", hold_s=30, sync_interval=0,
                          services=OperatorServices(home, GATE, shop.url), status_interval=0)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)
                # the ledger's disk is full for reading the outbox: the round the sale starts fails and says so
                monkeypatch.setattr(Ledger, "outbox_totals", lambda *a, **k: (_ for _ in ()).throw(
                    sqlite3.OperationalError("database or disk is full")))
                assert (await asyncio.to_thread(app.runtime.broker.tap, card))["gate"]["open"]
                await until(pilot, lambda: showing(app, GateResultScreen))
                await until(pilot, lambda: app.sync_failure == "disk" and app.sync_progress is None)
                await pilot.press("escape")
                await until(pilot, lambda: showing(app, GateScreen) and app.status.pending_count == 1)
                assert "pending 1 · ¥70.00" in bar(app) and "storage error: F5 retries" in bar(app)
                await pilot.press("f4")
                await until(pilot, lambda: showing(app, HistoryScreen))
                table = app.screen.query_one("#history", DataTable)
                assert table.row_count == 1 and "pending" in str(table.get_row_at(0)[3])
                monkeypatch.undo()  # space freed: F5 works
                await pilot.press("f5")
                await until(pilot, lambda: app.sync_failure is None and app.status.pending_count == 0)
                await until(pilot, lambda: "settled" in str(table.get_row_at(0)[3]))  # the history reads again
                await pilot.press("escape", "f6")
                await until(pilot, lambda: showing(app, ReportScreen) and app.screen.reconciliation is not None)
                assert "Reconciliation: matched" in report_text(app)
            app.gate.close()

        asyncio.run(scenario())
