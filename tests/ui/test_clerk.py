"""Pilot tests of the clerk's flows: charge approved, declined, cancel, timeout, torn tap, cart, refund, language."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

from textual.widgets import Input, Static

from ecny_nfc.mock import Faults
from pos.home import Home
from pos.payment.reasons import Reason
from pos.ui.clerk import ChargePanel, ClerkApp, CounterScreen, EntryPanel, ResultPanel
from pos.ui.history import HistoryScreen, ReceiptScreen, RefundScreen
from tests.ui.conftest import COUNTER, FakeServices, on_show, runtime, showing, text_of, until


def clerk(home: Home, **kwargs: object) -> ClerkApp:
    kwargs.setdefault("services", FakeServices())
    return ClerkApp(runtime(home), lang="en", status_interval=0, **kwargs)  # type: ignore[arg-type]


async def charge(app: ClerkApp, pilot: object, *keys: str) -> None:
    await pilot.press(*keys, "enter")  # type: ignore[attr-defined]
    await until(pilot, lambda: showing(app, ChargePanel))
    await until(pilot, lambda: app.runtime.broker.armed)  # type: ignore[arg-type, union-attr]


def payments(home: Home) -> list:
    with home.ledger(COUNTER) as ledger:
        return list(ledger.entries(kind="payment"))


def test_charge_approved(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "1", "2", "full_stop", "3")
            assert "¥12.30" in text_of(app.screen.query_one("#charge-text", Static))
            assert not gc.isenabled()  # no full collection between the tap and the painted result
            answer = await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, ResultPanel))
            screen = on_show(app)
            assert isinstance(screen, ResultPanel) and screen.outcome.approved
            await until(pilot, gc.isenabled)  # back on once the result is painted
            details = text_of(screen.query_one("#details", Static))
            assert "¥12.30" in details and "¥987.70" in details and screen.outcome.voucher_id in details
            assert answer["status"] == "approved" and answer["voucher_id"] == screen.outcome.voucher_id
            await pilot.press("r")
            await until(pilot, lambda: showing(app, ReceiptScreen))
            await pilot.press("p")
            receipt = (home.root / "receipts" / f"{screen.outcome.voucher_id}.txt").read_text()
            assert "¥12.30" in receipt and "pending offline" in receipt and "CMGQ0001" in receipt
            await pilot.press("escape", "enter")
            assert showing(app, EntryPanel) and app.screen.amount_fen == 0
        assert [p.amount_fen for p in payments(home)] == [1230]
        assert home.cards.load("c0001").balance_fen == 100_000 - 1230

    asyncio.run(scenario())


def test_charge_declined_shows_reason_and_next_step(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "1", "2")
            await asyncio.to_thread(app.runtime.broker.tap, "c0002")  # holds ¥5.00
            await until(pilot, lambda: showing(app, ResultPanel))
            screen = on_show(app)
            assert isinstance(screen, ResultPanel)
            assert screen.outcome.reason is Reason.INSUFFICIENT_BALANCE
            details = text_of(screen.query_one("#details", Static))
            assert "insufficient balance" in details and "ask for another wallet" in details
            await pilot.press("enter")
            assert showing(app, EntryPanel)
            assert app.screen.amount_fen == 1200  # kept for another wallet
        assert payments(home) == []
        assert home.cards.load("c0002").balance_fen == 500

    asyncio.run(scenario())


def test_cancel_returns_at_once_and_charges_nothing(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "8")
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, EntryPanel), timeout=2)
            assert not app.runtime.broker.armed and gc.isenabled()
        with home.ledger(COUNTER) as ledger:
            # The charge's intent is closed unpaid: no payment, nothing held for recovery.
            assert [e.kind for e in ledger.entries()] == ["intent", "void"]
            assert ledger.open_intents() == []

    asyncio.run(scenario())


def test_timeout_declines_with_no_card(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home, charge_timeout=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "8")
            await until(pilot, lambda: showing(app, ResultPanel), timeout=3)
            assert on_show(app).outcome.reason is Reason.NO_CARD
            assert "start the charge again" in text_of(app.screen.query_one("#details", Static))

    asyncio.run(scenario())


def test_torn_tap_then_recovery_on_the_next_tap(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "1")
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, ResultPanel))
            pay_apdu = len(app.runtime.last_trace)  # PAY is the last exchange of a clean tap
            await pilot.press("enter")

            await charge(app, pilot, "2")
            torn = await asyncio.to_thread(app.runtime.broker.tap, "c0001", Faults(tear_after=pay_apdu))
            await until(pilot, lambda: showing(app, ResultPanel))
            outcome = on_show(app).outcome
            assert torn["reason"] == "card_removed" and outcome.pending_recovery
            assert "the next tap of this wallet at this terminal settles it" in text_of(
                app.screen.query_one("#details", Static))
            assert app.runtime.last_trace[-1].response is None
            await pilot.press("enter")

            await charge(app, pilot, "escape", "3")  # a declined amount stays typed: clear it
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved and len(on_show(app).outcome.recovered) == 1
            assert "recovered ¥2.00 from an earlier torn tap" in text_of(app.screen.query_one("#details", Static))
        # the torn ¥2 was taken by the card, so it is recorded once, found on the next tap
        assert sorted(p.amount_fen for p in payments(home)) == [100, 200, 300]
        assert home.cards.load("c0001").balance_fen == 100_000 - 600

    asyncio.run(scenario())


def test_cart_quantities_and_total(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))
            assert isinstance(app.screen, CounterScreen)
            screen = app.screen.entry
            await pilot.press("plus", "plus", "down", "plus")  # 2 × top-up 30 + 1 × top-up 50
            assert screen.cart == {"topup-30": 2, "topup-50": 1}
            assert screen.amount_fen == 11_000
            assert "¥110.00" in text_of(screen.query_one("#cart-total", Static))
            await pilot.press("up", "minus")
            assert screen.amount_fen == 8_000
            await pilot.press("5")  # typing replaces the cart
            assert screen.cart == {} and screen.amount_fen == 500
            await pilot.press("escape", "plus")
            await charge(app, pilot)
            assert app.screen.amount_fen == 3_000
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, ResultPanel))
            assert on_show(app).outcome.approved and on_show(app).outcome.amount_fen == 3_000

    asyncio.run(scenario())


def test_amount_entry_rules(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))
            screen = app.screen.entry
            await pilot.press("full_stop", "5", "full_stop", "0", "7", "9")  # second dot and third decimal refused
            assert screen.typed == "0.50" and screen.amount_fen == 50
            await pilot.press("backspace", "backspace")
            assert screen.typed == "0." and screen.amount_fen == 0
            await pilot.press("enter")  # nothing to charge
            assert showing(app, EntryPanel)

    asyncio.run(scenario())


def test_refund_from_history_through_the_service(home: Home) -> None:
    services = FakeServices()

    async def scenario() -> None:
        app = clerk(home, services=services)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "2", "0")
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")
            await until(pilot, lambda: showing(app, ResultPanel))
            voucher = on_show(app).outcome.voucher_id
            await pilot.press("enter", "f4")
            await until(pilot, lambda: showing(app, HistoryScreen))
            assert [t.voucher_id for t in app.screen.shown] == [voucher]
            app.screen.query_one("#search", Input).value = "nothing-like-this"
            await pilot.pause()
            assert app.screen.shown == []
            app.screen.query_one("#search", Input).value = voucher[-6:]
            await pilot.pause()
            assert len(app.screen.shown) == 1
            await pilot.press("f8")
            assert isinstance(app.screen, RefundScreen)
            app.screen.query_one(Input).value = "25.00"  # more than paid: refused in the dialog
            await pilot.press("enter")
            assert isinstance(app.screen, RefundScreen) and services.refunds == []
            app.screen.query_one(Input).value = "7.50"
            await pilot.press("enter")
            await until(pilot, lambda: services.refunds != [])
        assert services.refunds == [(voucher, 750)]

    asyncio.run(scenario())


def test_sync_key_reports_progress_and_refreshes(home: Home) -> None:
    """F5 syncs in the background: the status bar shows the progress while it runs (a second F5 meanwhile starts
    nothing), then the figures the sync changed, read again from the ledger, and no progress."""
    halfway, resume = threading.Event(), threading.Event()

    class HeldSync(FakeServices):
        """A sync that stops halfway until the test lets it go on, and brings a new denylist (version 7)."""

        def sync(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
            assert progress is not None
            progress(1, 2)
            halfway.set()
            assert resume.wait(30)
            with home.ledger(COUNTER) as ledger:
                ledger.apply_denylist(7, ["0991000000000008"])
            progress(2, 2)
            self.syncs += 1
            return {"uploaded": 2, "settled": 2, "rejected": []}

    services = HeldSync(online=True)

    async def scenario() -> None:
        app = clerk(home, services=services)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status.online and showing(app, EntryPanel))
            bar = app.screen.query_one("StatusBar", Static)
            assert app.status.denylist_version == 0 and "denylist v0" in text_of(bar)
            try:
                await pilot.press("f5")
                await until(pilot, lambda: app.status.progress == "syncing 1/2")
                assert halfway.is_set() and "syncing 1/2" in text_of(bar)
                await pilot.press("f5")  # already syncing: ignored
                await pilot.pause()
            finally:
                resume.set()
            await until(pilot, lambda: app.status.progress == "" and app.status.denylist_version == 7)
            assert "denylist v7" in text_of(bar) and "syncing" not in text_of(bar)
            assert services.syncs == 1

    asyncio.run(scenario())


def test_language_switch_relabels_every_screen(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            label = app.screen.query_one("#amount-label", Static)
            assert text_of(label) == "Amount (yuan)"
            await pilot.press("f3")
            assert app.lang == "zh-CN"
            assert text_of(label) == "收款金额（元）"
            assert "收款" in text_of(app.screen.query_one("KeyBar", Static))
            assert "待结算" in text_of(app.screen.query_one("StatusBar", Static))
            await charge(app, pilot, "1")
            assert text_of(app.screen.query_one("#prompt", Static)) == "请碰一碰"
            await pilot.press("f3")
            assert text_of(app.screen.query_one("#prompt", Static)) == "Tap the wallet"
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, EntryPanel))
            assert text_of(app.screen.query_one("#amount-label", Static)) == "Amount (yuan)"

    asyncio.run(scenario())


def test_leaving_the_app_with_a_charge_open_turns_the_garbage_collector_back_on(home: Home) -> None:
    """The counter holds the collector off during a sale; an app that ends mid-charge must not leave the process
    without one."""
    async def scenario() -> None:
        app = clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await charge(app, pilot, "8")
            assert not gc.isenabled()  # held off for the sale

    asyncio.run(scenario())
    assert gc.isenabled()
