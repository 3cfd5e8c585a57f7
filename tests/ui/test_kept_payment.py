"""The counter when the disk refuses a payment the card has made (issue 16): the charge screen does not freeze (an
Esc meanwhile says the payment is completing), the result says in words that the wallet was charged, that the
payment is kept and written once space is freed and what the clerk does; the status bar keeps saying it until
F5 (a sync round) writes it, once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator

import pytest
from textual.widgets import Static

from pos.home import Home
from pos.ledger import Ledger
from pos.payment.unwritten import KEPT
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, ResultPanel
from tests.ui.conftest import COUNTER, FakeServices, on_show, runtime, showing, text_of, until


@pytest.fixture(autouse=True)
def kept() -> Iterator[None]:
    KEPT.clear()
    yield
    KEPT.clear()


def test_a_payment_the_disk_refused_is_said_kept_and_f5_writes_it_once(home: Home,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    full = {"on": True}
    at_write, go_on = threading.Event(), threading.Event()
    real = Ledger._append

    def append(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
        if kind == "payment" and full["on"]:
            at_write.set()
            go_on.wait(10)  # the clerk presses Esc while the card has paid and the write is under way
            raise sqlite3.OperationalError("database or disk is full")
        return real(led, kind, **fields)

    monkeypatch.setattr(Ledger, "_append", append)
    services = FakeServices()

    def payments() -> list[str | None]:
        with home.ledger(COUNTER, readonly=True) as led:
            return [e.voucher_id for e in led.entries(kind="payment")]

    async def scenario() -> None:
        app = ClerkApp(runtime(home), lang="en", services=services, status_interval=0, sync_interval=0)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("7", "enter")
            await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)
            charge = on_show(app)
            assert isinstance(charge, ChargePanel)
            tap = asyncio.create_task(asyncio.to_thread(app.runtime.broker.tap, "c0001"))
            await until(pilot, at_write.is_set)
            await pilot.press("escape")
            assert "completing the payment" in charge.status_line() and "cancelling" not in charge.status_line()
            go_on.set()
            answer = await tap
            await until(pilot, lambda: showing(app, ResultPanel))
            result = on_show(app)
            assert isinstance(result, ResultPanel)
            vid = result.outcome.kept_voucher_id
            assert vid and answer["kept_voucher_id"] == vid and answer["pending_recovery"]
            verdict = text_of(result.query_one("#verdict", Static))
            details = text_of(result.query_one("#details", Static))
            assert "CHARGED · NOT WRITTEN YET" in verdict and "Declined" not in verdict
            assert "the wallet was charged" in details and "written to the ledger as soon as space is freed" in details
            assert "free space on the terminal's disk, or call support" in details and vid in details
            app.action_switch_language()
            await pilot.pause()
            zh = text_of(result.query_one("#details", Static))
            assert "钱包已扣款" in zh and "请腾出终端磁盘空间" in zh
            app.action_switch_language()
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, EntryPanel))
            assert app.screen.amount_fen == 0  # paid: the sale is cleared, not left typed to be charged again
            app.redraw_status()
            assert "1 not written ¥7.00: free disk space" in text_of(app.screen.query_one("StatusBar", Static))
            assert payments() == [] and home.cards.load("c0001").balance_fen == 100_000 - 700
            full["on"] = False  # space freed; the clerk presses F5
            await pilot.press("f5")
            await until(pilot, lambda: services.syncs == 1 and KEPT.count(home.ledger_path(COUNTER)) == (0, 0))
            await until(pilot, lambda: any("is now in the ledger" in str(n.message) for n in app._notifications))
            app.redraw_status()
            assert "not written" not in text_of(app.screen.query_one("StatusBar", Static))
            assert payments() == [vid]
            await pilot.press("1", "enter")  # the same customer again: nothing recovered twice
            await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)
            again = await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            assert again["status"] == "approved" and again["recovered"] == []
        assert sorted(payments(), key=str) == sorted([vid, again["voucher_id"]])

    asyncio.run(scenario())
