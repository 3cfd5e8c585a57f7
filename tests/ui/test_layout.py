"""Layout and language at 80x24 (issue 12, point 6): no table wider than its box (the stray "▏" was a sideways
scrollbar), notifications above the status bar, Ctrl+C, the cart count, the tester panel's tap results and card
states, the gate's footer and help, a gate copy without the key and the reconciliation's differences, each in both
languages."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from textual.widgets._toast import ToastRack

from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.i18n import tr
from pos.records import day_report
from pos.ui.app import HelpScreen, TerminalApp
from pos.ui.clerk import ChargePanel, ClerkApp, EntryPanel, ResultPanel
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from pos.ui.history import HistoryScreen
from pos.ui.history.report import difference_text
from pos.ui.tester import TesterScreen
from pos.ui.widgets import StatusBar
from tests.ui.conftest import GATE, FakeServices, runtime, showing, text_of, until

LANGS = ["zh-CN", "en"]
LATIN_WORD = re.compile(r"[A-Za-z]{3,}")


def tables_fit(app: TerminalApp) -> None:
    """Every table on the screen shows its full width (nothing to scroll sideways, nothing cut)."""
    for table in app.screen.query(DataTable):
        if table.display:
            assert table.max_scroll_x == 0, (type(app.screen).__name__, table.id, table.virtual_size.width)


def notes(app: TerminalApp) -> list[str]:
    return [f"{n.title or ''} {n.message}" for n in app._notifications]


@pytest.mark.parametrize("lang", LANGS)
def test_the_counter_fits_80x24_and_speaks_its_language(home: Home, lang: str) -> None:
    services = FakeServices()

    async def scenario() -> None:
        app = ClerkApp(runtime(home), lang=lang, services=services, status_interval=0)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await until(pilot, lambda: showing(app, EntryPanel))
            tables_fit(app)
            bar = text_of(app.screen.query_one("KeyBar", Static))
            assert f"^Q {tr('key.quit_ctrl', lang)}" in bar and f"F1 {tr('key.help', lang)}" in bar
            await pilot.press("f1")  # the keys the footer has no room for
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            help_text = text_of(app.screen.query_one("#help-box", Static))
            assert tr("key.sync", lang) in help_text and tr("key.tester", lang) in help_text
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, EntryPanel))
            await pilot.press("plus")
            hint = text_of(app.screen.query_one("#hint", Static))
            assert hint == tr("counter.hint_cart_one", lang)  # "Cart: 1 item", not "1 items"
            await pilot.press("plus")
            assert text_of(app.screen.query_one("#hint", Static)) == tr("counter.hint_cart", lang, n=2)

            await pilot.press("ctrl+c")  # Textual's "Press ctrl+q to quit the app", in the terminal's language
            await until(pilot, lambda: bool(app._notifications))
            assert notes(app) == [f"{tr('quit.how_title', lang)} {tr('quit.how', lang)}"]
            await pilot.pause()
            rack = app.screen.query_one(ToastRack)
            bar = app.screen.query_one(StatusBar)
            assert rack.region.bottom <= bar.region.y  # the toast stands above the status bar

            await pilot.press("f2")
            await until(pilot, lambda: showing(app, TesterScreen))
            tables_fit(app)
            await pilot.press("escape", "enter")
            await until(pilot, lambda: showing(app, ChargePanel) and app.runtime.broker.armed)  # type: ignore
            await asyncio.to_thread(app.runtime.broker.tap, "c0001")  # type: ignore[union-attr]
            await until(pilot, lambda: showing(app, ResultPanel))
            details = text_of(app.screen.query_one("#details", Static))
            assert tr("label", lang, label=tr("result.amount", lang)) + "¥60.00" in details  # "金额：", "Amount: "
            await pilot.press("enter", "f4")
            await until(pilot, lambda: showing(app, HistoryScreen))
            tables_fit(app)
            app.clear_notifications()
            await pilot.press("f8", "enter")  # refund it all
            await until(pilot, lambda: any(tr("refund.done", lang, amount="¥60.00") in n for n in notes(app)))
            if lang == "zh-CN":
                assert not [n for n in notes(app) if LATIN_WORD.search(n) and "/" not in n], notes(app)

    asyncio.run(scenario())


def gate_app(home: Home, lang: str) -> GateApp:
    return GateApp(runtime(home, GATE), Gate(home, GATE), lang=lang, services=FakeServices(), hold_s=30,
                   sync_interval=0)


async def tap_from_the_panel(app: GateApp, pilot: Pilot[Any], fault: str = "none") -> None:
    """From the tester panel over the gate: tap c0001 (or, with ``fault``, a copy of it) and wait for the result."""
    if not showing(app, TesterScreen):
        await pilot.press("f2")
        await until(pilot, lambda: showing(app, TesterScreen))
    panel = app.screen
    assert isinstance(panel, TesterScreen)
    panel.fault = fault
    seen = app.decisions
    await pilot.press("enter")
    await until(pilot, lambda: showing(app, GateResultScreen) and app.decisions == seen + 1)
    await pilot.press("enter")  # back from the result, to the panel
    await until(pilot, lambda: showing(app, TesterScreen) and panel.last is not None and "→" in panel.last())


@pytest.mark.parametrize("lang", LANGS)
def test_a_gate_copy_without_the_key_is_told_it_is_not_the_buyer(home: Home, lang: str) -> None:
    """The copy holds no ticket of its own and paid nothing: the gate says it cannot prove it is the wallet that
    bought the tickets, not that a payment's signature was bad; the tester panel says the same, in words, and
    names the copy in full."""

    async def scenario() -> None:
        app = gate_app(home, lang)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: showing(app, GateScreen) and app.runtime.broker.armed)  # type: ignore
            tables_fit(app)
            bar = text_of(app.screen.query_one("KeyBar", Static))
            assert f"^Q {tr('key.quit_ctrl', lang)}" in bar and f"F1 {tr('key.help', lang)}" in bar
            await pilot.press("f1")  # the keys the footer has no room for
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            help_text = text_of(app.screen.query_one("#help-box", Static))
            assert tr("key.sync", lang) in help_text and tr("key.tester", lang) in help_text
            await pilot.press("escape")
            await until(pilot, lambda: showing(app, GateScreen))
            await pilot.press("plus")
            await tap_from_the_panel(app, pilot)  # c0001 buys two tickets and walks in on the first
            with home.ledger(GATE) as ledger:  # the day's sales by item count the tickets, as a cart's items
                items = day_report(ledger, app.now().date(), home.terminal_dir(GATE))["items"]
            assert [(i["sku"], i["qty"]) for i in items] == [("adult", 2)]
            await tap_from_the_panel(app, pilot, "clone_keyless")
            d = app.last_decision
            assert d is not None and not d.open and d.code == "bad_signature" and d.proof_failed
            assert d.message(lang) == tr("gate.proof_failed", lang)
            assert d.next_step(lang) == tr("gate.proof_failed_next", lang)
            panel = app.screen
            line = text_of(panel.query_one("#tap-result", Static))
            assert "bad_signature" not in line and tr("gate.proof_failed", lang) in line.replace("\n", "")
            assert tr("gate.stop_short", lang) in line
            tables_fit(app)
            table = panel.query_one("#cards", DataTable)
            copy = table.get_row_at(table.row_count - 1)
            assert copy[-1] == tr("tester.clone_keyless_of", lang, card="c0001")  # all of it, not "克隆自c000"
            await pilot.press("f3")  # the last tap's words follow the language
            other = "en" if lang == "zh-CN" else "zh-CN"
            line = text_of(panel.query_one("#tap-result", Static)).replace("\n", "")
            assert tr("gate.proof_failed", other) in line
        app.gate.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("lang", LANGS)
def test_reconciliation_differences_are_said_in_the_clerks_language(lang: str) -> None:
    app = ClerkApp.__new__(ClerkApp)  # only its words: no terminal needed
    app.lang = lang
    voucher = "0991000000000019-00000003"
    status = difference_text(app, {"voucher_id": voucher, "field": "status", "terminal": "pending",
                                   "operator": "rejected", "note": "outcomes differ"})
    assert status == tr("report.diff_status", lang, id=voucher, here=tr("status.pending", lang),
                        there=tr("status.rejected", lang))
    amount = difference_text(app, {"voucher_id": voucher, "field": "amount_fen", "terminal": 1230, "operator": 1300,
                                   "note": "amounts differ"})
    assert "¥12.30" in amount and "¥13.00" in amount
    refund = difference_text(app, {"refund_id": "R1", "field": "refund", "terminal": None, "operator": 500,
                                   "note": "refunds differ"})
    assert tr("status.missing", lang) in refund and "¥5.00" in refund
    if lang == "zh-CN":
        assert not LATIN_WORD.search(status.replace(voucher, "")) and "differ" not in amount


@pytest.mark.parametrize("lang", LANGS)
def test_operator_errors_are_said_in_the_clerks_language(lang: str) -> None:
    """A terminal with no key, a refund the operator cannot make, an operator's refusal: no English sentence of the
    library's on a Chinese screen, and no shell command as the clerk's next step."""
    from types import SimpleNamespace

    from pos.sync.client import NotProvisioned, OperatorRefused, OperatorUnavailable
    from pos.sync.refunds import RefundRefused
    from pos.ui.app import error_text

    app = ClerkApp.__new__(ClerkApp)
    app.lang = lang
    app.runtime = SimpleNamespace(terminal_id="CMGQ0001")  # type: ignore[assignment]
    said = {
        "not_provisioned": error_text(app, NotProvisioned("terminal CMGQ0001 has no key yet: run `pos terminal ...`")),
        "refund": error_text(app, RefundRefused("voucher V cannot be refunded: not settled yet")),
        "refused": error_text(app, OperatorRefused(409, "over_refund", "more than paid")),
        "offline": error_text(app, OperatorUnavailable("operator not reachable: refused")),
    }
    assert said["not_provisioned"] == tr("error.not_provisioned", lang, terminal="CMGQ0001")
    assert said["refund"] == tr("error.refund_refused", lang)
    assert said["refused"] == tr("error.operator_refused", lang, code="over_refund")
    assert said["offline"] == tr("operator.unavailable", lang)
    if lang == "zh-CN":
        for text in said.values():
            assert not LATIN_WORD.search(re.sub(r"pos terminal provision|CMGQ0001|over_refund", "", text)), text
