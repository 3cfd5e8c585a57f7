"""The clerk's counter screen: one screen for a whole sale, its panels switched in place.

``CounterScreen`` holds the title, the status bar, the key bar and a :class:`~textual.widgets.ContentSwitcher` of
three panels built once: the entry (:mod:`.entry`: amount or cart), the charge in progress (:mod:`.charge`) and
the result (:mod:`.result`). Enter -> tap -> approved is two panel switches, never a new screen: nothing is
composed or styled while the customer waits. History, receipts and the report are screens of their own
(:mod:`pos.ui.history`), opened from the entry panel.
"""

from __future__ import annotations

import contextlib
import gc
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import ContentSwitcher, Static

from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from pos.records import Item, Sale, last_voucher, save_sale
from pos.ui.app import TerminalScreen
from pos.ui.clerk.charge import ChargePanel
from pos.ui.clerk.entry import EntryPanel
from pos.ui.clerk.result import ResultPanel
from pos.ui.history import HistoryScreen, ReportScreen
from pos.ui.history.printing import print_document
from pos.ui.history.screens import print_receipt, receipt_for
from pos.ui.quit import QuitScreen
from pos.ui.widgets import KeyBar, Keys, StatusBar
from pos.ui.widgets.panel import Panel


class CounterScreen(TerminalScreen):
    """The counter: entry, charge and result panels in place, under the title and over the status and key bars."""

    KEYS: ClassVar = EntryPanel.KEYS

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with ContentSwitcher(initial="entry-panel", id="sale"):
            yield EntryPanel(id="entry-panel")
            yield ChargePanel(id="charge-panel")
            yield ResultPanel(id="result-panel")
        yield StatusBar()
        yield KeyBar(list(EntryPanel.KEYS))

    # -- the panels -------------------------------------------------------------------------------------------------
    @property
    def entry(self) -> EntryPanel:
        return self.query_one(EntryPanel)

    @property
    def charge(self) -> ChargePanel:
        return self.query_one(ChargePanel)

    @property
    def result(self) -> ResultPanel:
        return self.query_one(ResultPanel)

    @property
    def panel(self) -> Panel:
        """The panel on show."""
        switcher = self.query_one("#sale", ContentSwitcher)
        return self.query_one(f"#{switcher.current}", Panel)

    @property
    def keys(self) -> Keys:
        return self.panel.keys

    @property
    def amount_fen(self) -> int:
        """What Enter on the entry would charge."""
        return self.entry.amount_fen

    def _switch(self, panel: Panel) -> None:
        self.query_one("#sale", ContentSwitcher).current = panel.id
        panel.take_keys()
        bar = self.query_one(KeyBar)
        bar.keys = panel.keys
        bar.retranslate()

    def ready(self) -> None:
        self.entry.fill()
        self.retranslate()
        self.entry.take_keys()

    def retranslate(self) -> None:
        rt = self.tapp.runtime
        lang = self.tapp.lang
        name = rt.terminal.name.get(lang) if rt.terminal.name else rt.terminal_id
        self.query_one("#title", Static).update(
            Text.assemble((f" {rt.merchant.name.get(lang)} ", "bold"), f"· {name} · {rt.terminal_id}"))
        for panel in self.query(Panel):
            panel.retranslate()
        self.query_one(KeyBar).keys = self.panel.keys
        super().retranslate()

    # -- a sale: entry -> charge -> result -> entry -----------------------------------------------------------------
    def start_charge(self, amount_fen: int, items: tuple[Item, ...] = ()) -> None:
        """Enter on the entry: the reader starts waiting at once, then the charge panel shows.

        Python's cyclic garbage collector is held off from here until the outcome is painted: a full collection
        of a Textual app's objects stops every thread for 50-200 ms, and it should not land between the tap and
        the clerk seeing the result (freed memory is still freed at once by reference counting meanwhile)."""
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self.charge.start(amount_fen, items)
        self._switch(self.charge)

    def _collect_again(self) -> None:
        if getattr(self, "_gc_was_enabled", False):
            gc.enable()
        self._gc_was_enabled = False

    def on_unmount(self) -> None:
        self._collect_again()  # the app quit with a charge open: the collector is the process's, not the screen's

    def charge_decided(self, outcome: Outcome, items: tuple[Item, ...], quit_after: bool = False) -> None:
        """The charge's worker decided: the outcome on screen first; its record, receipt and sync after the paint."""
        while self.app.screen is not self:  # e.g. the tester panel opened over the charge
            self.app.pop_screen()
        if outcome.reason is Reason.CANCELLED:
            self._collect_again()
            if quit_after:
                self.app.exit()
                return
            self.show_entry(new_sale=False)
            self.app.notify(self.t("charge.cancelled"))
            return
        self.show_result(outcome)
        self.call_after_refresh(self._after_result, outcome, items)
        if quit_after:
            self.app.push_screen(QuitScreen())

    def show_result(self, outcome: Outcome) -> None:
        self.result.show(outcome)
        self._switch(self.result)

    def show_entry(self, new_sale: bool) -> None:
        """Back to the entry: cleared for a new sale after an approval, the amount kept after a decline."""
        if new_sale:
            self.entry.action_clear()
        self._switch(self.entry)

    def _after_result(self, outcome: Outcome, items: tuple[Item, ...]) -> None:
        """Once the result is painted: the garbage collector back on, an approved sale's record and receipt (off the
        event loop), then the sync."""
        self._collect_again()
        if outcome.approved and outcome.voucher_id:
            self._record_sale(outcome, items)
        self.tapp.sale_decided(outcome.approved)

    @work(thread=True, group="sale-record", exit_on_error=False)
    def _record_sale(self, outcome: Outcome, items: tuple[Item, ...]) -> None:
        """The sale's record for its receipt (the items and the wallet's offline payments left), then the receipt on
        the printer when one is set: the sale is approved and recorded in the ledger already."""
        app = self.tapp
        rt = app.runtime
        voucher = outcome.voucher_id or ""
        try:
            save_sale(rt.home.terminal_dir(rt.terminal_id), Sale(voucher, items, outcome.offline_left))
        except OSError as exc:  # the payment is recorded; only its item lines are lost
            self._from_thread(app.notify, str(exc), severity="warning")
        if getattr(app, "printer", None) is None:
            return
        doc = receipt_for(app, voucher)
        if doc is not None:
            self._from_thread(print_document, app, doc, rt.home.root / "receipts" / f"{voucher}.txt")

    def _from_thread(self, fn: object, *args: object, **kwargs: object) -> None:
        with contextlib.suppress(RuntimeError):  # the app has closed meanwhile
            self.app.call_from_thread(fn, *args, **kwargs)  # type: ignore[arg-type]

    # -- the entry's other keys -------------------------------------------------------------------------------------
    def action_reprint(self) -> None:
        """F7: the last receipt again, on the printer (and in HOME/receipts)."""
        rt = self.tapp.runtime
        with rt.home.ledger(rt.terminal_id) as ledger:
            voucher = last_voucher(ledger)
        if voucher is None:
            self.notify(self.t("reprint.none"), severity="warning")
            return self.app.bell()
        print_receipt(self.tapp, voucher)

    def action_history(self) -> None:
        self.app.push_screen(HistoryScreen())

    def action_report(self) -> None:
        self.app.push_screen(ReportScreen())

    def new_sale(self) -> None:
        self.show_entry(new_sale=True)
