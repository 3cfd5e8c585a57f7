"""Pilot tests of the clerk's receipts and helpers: a cart's items reach the receipt and its reprint (F7), a
printer that is out of paper or gone never holds up a sale, F1 lists the keys in both languages, and a charge over
the offline cap is flagged before the tap."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from ecny_nfc.mock import MockReader
from pos.home import Home
from pos.printer import Document, PrinterError
from pos.printer.device import Target
from pos.runtime import Runtime
from pos.ui.app import HelpScreen
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, ResultPanel
from tests.ui.conftest import COUNTER, FakeServices, showing, text_of, until


class PaperOut:
    """A printer that answers 'paper end', after the test lets it (so the sale is seen approved first)."""

    target = Target("tty", "/dev/ttyUSB9")

    def __init__(self) -> None:
        self.go = threading.Event()
        self.docs: list[Document] = []

    def print(self, doc: Document) -> None:
        self.docs.append(doc)
        assert self.go.wait(10)
        raise PrinterError("paper_out", target=str(self.target))


def clerk(home: Home, lang: str = "en", printer: Any = None) -> ClerkApp:
    rt = Runtime(home, COUNTER, MockReader())
    return ClerkApp(rt, lang=lang, services=FakeServices(), status_interval=0, printer=printer)  # type: ignore[arg-type]


def notes(app: ClerkApp) -> list[str]:
    return [str(n.message) + " " + str(n.title or "") for n in app._notifications]


async def pay_cart(app: ClerkApp, pilot: Any, *keys: str) -> ResultPanel:
    await until(pilot, lambda: showing(app, EntryPanel))
    await pilot.press(*keys, "enter")
    await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)  # type: ignore[union-attr]
    broker = app.runtime.broker
    assert broker is not None
    answer = await asyncio.to_thread(broker.tap, "c0001", None, 30)
    assert answer["status"] == "approved"
    await until(pilot, lambda: showing(app, ResultPanel))
    screen = app.screen.panel
    assert isinstance(screen, ResultPanel)
    return screen


def test_a_cart_sale_prints_its_items_and_f7_reprints_them(home: Home, tmp_path: Path) -> None:
    lp = tmp_path / "lp0"

    async def scenario() -> None:
        app = clerk(home, printer=f"file:{lp}")
        async with app.run_test(size=(80, 24)) as pilot:
            result = await pay_cart(app, pilot, "plus", "plus", "down", "plus")  # 2 × top-up 30, 1 × top-up 50
            details = text_of(result.query_one("#details", Static))
            assert "Offline payments: 9 left before the wallet must go online" in details
            await until(pilot, lambda: lp.exists() and lp.read_bytes().count(b"\x1dV") == 1)
            await pilot.press("enter")
            await until(pilot, lambda: showing(app, EntryPanel))
            await pilot.press("f7")
            await until(pilot, lambda: lp.read_bytes().count(b"\x1dV") == 2)
        first, second = lp.read_bytes().split(b"\x1dVB\x03")[:2]
        assert first == second  # the reprint is the same receipt
        text = first.decode("gb18030", errors="replace")
        for expected in ("Phone top-up 30", "2 × ¥30.00", "Phone top-up 50", "¥110.00", "ECNYDEMO01", "9 left"):
            assert expected in text, expected
        saved = (home.root / "receipts").glob("*.txt")
        assert any("Phone top-up 50" in p.read_text(encoding="utf-8") for p in saved)

    asyncio.run(scenario())


def test_a_printer_out_of_paper_never_holds_up_the_sale(home: Home) -> None:
    printer = PaperOut()

    async def scenario() -> None:
        app = clerk(home, printer=printer)
        async with app.run_test(size=(80, 24)) as pilot:
            await pay_cart(app, pilot, "4")  # approved and shown; the receipt goes out after the result is painted
            await until(pilot, lambda: bool(printer.docs))  # the printer is stuck on it
            assert not any("out of paper" in n for n in notes(app))
            await pilot.press("enter")  # the next sale can start
            await until(pilot, lambda: showing(app, EntryPanel))
            printer.go.set()
            await until(pilot, lambda: any("out of paper" in n for n in notes(app)))
            assert any("the sale stands" in n for n in notes(app))

    asyncio.run(scenario())


def test_a_missing_printer_says_so_and_the_sale_stands(home: Home) -> None:
    async def scenario() -> None:
        app = clerk(home, printer="tty:/dev/no-such-printer")
        async with app.run_test(size=(80, 24)) as pilot:
            result = await pay_cart(app, pilot, "4")
            assert result.outcome.approved
            await until(pilot, lambda: any("no printer at tty:/dev/no-such-printer" in n for n in notes(app)))

    asyncio.run(scenario())


@pytest.mark.parametrize(("lang", "expected"), [
    ("en", ["Enter", "charge", "F7", "reprint", "Ctrl+Q", "quit the terminal", "F5", "sync", "F2", "tester",
            "type an amount"]),
    ("zh-CN", ["Enter", "收款", "F7", "重打小票", "Ctrl+Q", "退出终端", "F5", "同步", "F2", "测试", "输入金额"]),
])
def test_f1_lists_every_key_of_the_screen_in_its_language(home: Home, lang: str, expected: list[str]) -> None:
    async def scenario() -> None:
        app = clerk(home, lang)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))
            await pilot.press("f1")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            box = app.screen.query_one("#help-box", Static)
            text = text_of(box)
            for word in expected:
                assert word in text, word
            keys = [line.split()[0] for line in text.splitlines()[2:-2] if line.strip()]
            assert len(keys) == len(set(keys)), keys  # one row per key: F1, F3 and Ctrl+Q said once
            assert len(text.splitlines()) <= box.content_size.height  # down to "Esc or F1 closes", at 80x24
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, EntryPanel))
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))

    asyncio.run(scenario())


@pytest.mark.parametrize(("lang", "says"), [
    ("en", "over the offline limit of ¥500.00 for one payment: split it, or go online"),
    ("zh-CN", "超过单笔离线限额 ¥500.00：请拆分付款，或联网支付"),
])
def test_a_charge_over_the_offline_cap_is_flagged_before_the_tap(home: Home, lang: str, says: str) -> None:
    async def scenario() -> None:
        app = clerk(home, lang)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))
            await pilot.press(*"500")
            assert says not in text_of(app.screen.query_one("#hint", Static))  # at the cap: fine
            await pilot.press(*".01")
            assert says in text_of(app.screen.query_one("#hint", Static))
            await pilot.press("enter")
            await pilot.pause(0.05)
            assert showing(app, EntryPanel)  # no tap is asked for
            assert any(says in n for n in notes(app))
        with home.ledger(COUNTER) as ledger:
            assert list(ledger.entries()) == []

    asyncio.run(scenario())
