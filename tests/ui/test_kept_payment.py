"""The counter when the disk refuses a payment the card has made (issue 16): the charge screen does not freeze (an
Esc meanwhile says the payment is completing), the result says in words that the wallet was charged, that the
payment is kept and written once space is freed and what the clerk does; the status bar keeps saying it until
F5 (a sync round) writes it, once. Ctrl+Q with a payment kept first writes it; one the disk still refuses is warned
about (how many, how much, what quitting means, what to do) before the terminal quits."""

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
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, QuitScreen, ResultPanel
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


class FullDisk:
    """The ledger refuses every ``payment`` entry while ``on`` (the card has paid: the voucher is kept), and counts
    the writes it refused."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = True
        self.refused = 0
        real = Ledger._append

        def append(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
            if kind == "payment" and self.on:
                self.refused += 1
                raise sqlite3.OperationalError("database or disk is full")
            return real(led, kind, **fields)

        monkeypatch.setattr(Ledger, "_append", append)


def payments(home: Home) -> list[str | None]:
    with home.ledger(COUNTER, readonly=True) as led:
        return [e.voucher_id for e in led.entries(kind="payment")]


def kept_now(home: Home) -> tuple[int, int]:
    return KEPT.count(home.ledger_path(COUNTER))


async def pay_kept(app: ClerkApp, pilot: object, yuan: str) -> str:
    """A sale of ``yuan`` the card pays and the disk refuses: the result on show; its voucher id."""
    await pilot.press(*yuan, "enter")  # type: ignore[attr-defined]
    await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)  # type: ignore[arg-type]
    answer = await asyncio.to_thread(app.runtime.broker.tap, "c0001")
    await until(pilot, lambda: showing(app, ResultPanel))  # type: ignore[arg-type]
    assert answer["kept_voucher_id"] and answer["pending_recovery"]
    return str(answer["kept_voucher_id"])


def quiet_clerk(home: Home) -> ClerkApp:
    """A counter with no background sync or status polling: only the keys pressed write what is kept."""
    return ClerkApp(runtime(home), lang="en", services=FakeServices(), status_interval=0, sync_interval=0)


def quit_text(app: ClerkApp) -> str:
    return " ".join(text_of(app.screen.query_one(f"#quit-{part}", Static)) for part in ("title", "body", "todo", "hint")
                    if app.screen.query_one(f"#quit-{part}", Static).display)


def test_ctrl_q_with_a_kept_payment_warns_esc_stays_and_ctrl_q_again_quits(home: Home,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)

    async def scenario() -> None:
        app = quiet_clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pay_kept(app, pilot, "7")
            await pilot.press("enter")  # the sale is over; the counter is idle, the payment kept
            await until(pilot, lambda: showing(app, EntryPanel))
            assert disk.refused == 1 and kept_now(home) == (1, 700)
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            assert disk.refused == 2  # Ctrl+Q tried to write it first; the disk still refuses
            text = quit_text(app)
            assert "Not written to the ledger yet: 1 paid · ¥7.00" in text
            assert "recorded only when its wallet taps at this terminal again" in text
            assert "Free disk space, then press F5 to write (or wait for the next sync)" in text
            assert "Enter or Ctrl+Q quits anyway · F5 writes now · Esc stays" in text
            app.lang = "zh-CN"
            app.screen.redraw()  # type: ignore[attr-defined]
            zh = quit_text(app)
            assert "尚有 1 笔已扣款的付款未写入账本，共 ¥7.00" in zh and "同一钱包再次于本终端碰卡" in zh
            assert "请腾出磁盘空间，然后按 F5 写入" in zh
            app.lang = "en"
            await pilot.press("f5")  # still full: said so, the warning stays
            still = "Still not written: the disk still refuses"
            await until(pilot, lambda: any(n.title == still and "full" in n.message for n in app._notifications))
            assert disk.refused == 3 and isinstance(app.screen, QuitScreen)
            await pilot.press("escape")  # stays
            await until(pilot, lambda: showing(app, EntryPanel))
            assert not app._exit and kept_now(home) == (1, 700)
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("ctrl+q")  # quits anyway
            await until(pilot, lambda: app._exit)
        assert payments(home) == [] and kept_now(home) == (1, 700)  # left on the card's log and in this memory

    asyncio.run(scenario())


def test_ctrl_q_writes_a_kept_payment_once_the_disk_allows_and_quits(home: Home,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)

    async def scenario() -> None:
        app = quiet_clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            vid = await pay_kept(app, pilot, "7")
            disk.on = False  # space freed
            await pilot.press("ctrl+q")
            await until(pilot, lambda: app._exit)
            assert not isinstance(app.screen, QuitScreen)  # nothing left to warn about: no question
        assert payments(home) == [vid] and kept_now(home) == (0, 0)

    asyncio.run(scenario())


def test_f5_on_the_warning_writes_the_kept_payment_then_enter_quits(home: Home,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)

    async def scenario() -> None:
        app = quiet_clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            vid = await pay_kept(app, pilot, "7")
            await pilot.press("ctrl+q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            assert "1 paid · ¥7.00" in quit_text(app)
            disk.on = False  # the clerk frees space, then presses F5 on the warning
            await pilot.press("f5")
            await until(pilot, lambda: "Quit the terminal?" in quit_text(app))
            assert "not in the ledger" not in quit_text(app) and payments(home) == [vid]
            await pilot.press("enter")
            await until(pilot, lambda: app._exit)
        assert payments(home) == [vid]

    asyncio.run(scenario())


def test_ctrl_q_during_a_payment_the_disk_refuses_warns_over_its_outcome(home: Home,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl+Q after PAY waits for the outcome and asks; a payment kept meanwhile is warned about in that question."""
    at_write, go_on = threading.Event(), threading.Event()
    real = Ledger._append

    def append(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
        if kind == "payment":
            at_write.set()
            go_on.wait(10)
            raise sqlite3.OperationalError("database or disk is full")
        return real(led, kind, **fields)

    monkeypatch.setattr(Ledger, "_append", append)

    async def scenario() -> None:
        app = quiet_clerk(home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("7", "enter")
            await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)
            tap = asyncio.create_task(asyncio.to_thread(app.runtime.broker.tap, "c0001"))
            await until(pilot, at_write.is_set)
            await pilot.press("ctrl+q", "ctrl+q")  # asked, confirmed: quit once the payment is decided
            go_on.set()
            assert (await tap)["kept_voucher_id"]
            await until(pilot, lambda: isinstance(app.screen, QuitScreen) and app.screen.drawn
                        and not app.screen.charge_open)
            assert "1 paid · ¥7.00" in quit_text(app) and not app._exit
            await pilot.press("enter")
            await until(pilot, lambda: app._exit)

    asyncio.run(scenario())


def test_a_status_update_after_the_last_screen_is_gone_is_ignored(home: Home) -> None:
    """A sync round's status can arrive while the app shuts down, with no screen left: nothing to redraw, no
    ScreenStackError."""
    app = quiet_clerk(home)
    assert app.screen_stack == []
    app.redraw_status()
