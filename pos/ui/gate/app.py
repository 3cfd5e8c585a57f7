"""The ticket gate app: a reader loop in a worker thread decides every tap; the screens show each decision."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path, PurePath
from typing import Any, ClassVar

from textual import work
from textual.message import Message

from pos.gate.ticket_gate import PAID, Gate, GateDecision
from pos.money import format_fen
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from pos.records import Item, Sale, save_sale
from pos.runtime import Runtime
from pos.sync.services import Services
from pos.ui.app import TerminalApp
from pos.ui.gate.screens import GateResultScreen, GateScreen
from pos.ui.history import HISTORY_TCSS
from pos.ui.quit import KeptGuard
from pos.ui.tester import TESTER_TCSS, TesterScreen

GATE_TCSS = Path(__file__).with_name("gate.tcss")


class GateDecided(Message):
    """The reader loop's decision on one tap (posted from the worker thread)."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__()
        self.decision = decision


class GateApp(KeptGuard, TerminalApp):
    """The gate terminal: a reader loop in a worker thread decides every tap. Each visitor who walks in leaves the
    ready screen on one ticket of the first kind for the next; a refused visitor keeps the selection to try again.
    Its payments are in its own ledger, like a counter's: history (F4), sync (F5) and the day's report (F6). Ctrl+Q
    writes the payments the disk refused first, and warns about any it still cannot (:class:`KeptGuard`)."""

    CSS_PATH: ClassVar[list[str | PurePath]] = [*TerminalApp.CSS_PATH, GATE_TCSS, HISTORY_TCSS, TESTER_TCSS]
    TESTER_SCREEN = TesterScreen

    def __init__(self, runtime: Runtime, gate: Gate, *, lang: str = "zh-CN", services: Services | None = None,
                 hold_s: float | None = None, status_interval: float = 5.0, **sync: Any) -> None:
        super().__init__(runtime, lang=lang, services=services, status_interval=status_interval, **sync)
        self.gate = gate
        self.sku = gate.products[0].sku
        self.quantity = 1
        self.hold_s = hold_s if hold_s is not None else gate.settings.result_hold_s
        self.counts = gate.stats()
        self._halt = threading.Event()
        self._faulted = False  # the last tap failed on the terminal's own fault: reconcile before the next
        self.decisions = 0
        self.last_decision: GateDecision | None = None

    def on_mount(self) -> None:
        self.push_screen(GateScreen())
        self._reader_loop()

    def on_unmount(self) -> None:
        self._halt.set()

    def charge_timeout_s(self) -> float:
        return 10.0

    @work(thread=True, group="gate", exit_on_error=False)
    def _reader_loop(self) -> None:
        rt = self.runtime
        if rt.broker is not None:
            rt.broker.arm()
        while not self._halt.is_set():
            decision = self._admit()
            if decision is None:
                continue
            if decision.open:  # this visitor is through: the next one starts on one ticket of the first kind
                self.sku, self.quantity = self.gate.products[0].sku, 1
            self.last_decision = decision  # before the tap broker hands the decision to the tester panel
            rt.last_trace = decision.trace
            rt.last_result = decision.to_json("en")
            if rt.broker is not None:
                rt.broker.decided(rt.last_result)
            self.post_message(GateDecided(decision))
            if decision.code == PAID:
                self._keep_sale(decision)
            self.gate.housekeeping()  # while the result shows

    def _admit(self) -> GateDecision | None:
        """One tap. A fault of the terminal itself (its disk full under the ledger or gate.db: a typed
        ``StorageError``, or anything unforeseen) never stops the loop: it is a STOP decision (``terminal_error``)
        with the error notified, and before the next tap the passes of any payment that tap recorded are restored
        (:meth:`Gate.reconcile`), so its visitor enters on it rather than paying twice."""
        try:
            if self._faulted:
                self.gate.reconcile()
                self._faulted = False
            return self.gate.admit(self.runtime.reader, self.sku, self.quantity, timeout=0.2, cancel=self._halt,
                                   selection=lambda: (self.sku, self.quantity))
        except Exception as exc:  # the gate keeps reading whatever broke
            self._faulted = True
            if not self._halt.is_set():
                self.call_from_thread(self.notify, str(exc), title=self.t("reason.terminal_error"), severity="error")
            self._halt.wait(0.5)  # a disk that is still full is not asked again at once
            entries, remaining = self.counts
            return GateDecision(False, Reason.TERMINAL_ERROR.value, entries, remaining, sku=self.sku,
                                outcome=Outcome("declined", 0, Reason.TERMINAL_ERROR, detail=str(exc)))

    def _keep_sale(self, d: GateDecision) -> None:
        """A ticket sale's record, as the counter keeps a cart's: its tickets are the receipt's item line and the
        day's sales by item."""
        if d.outcome is None or not d.outcome.voucher_id or d.sku is None:
            return
        p = self.gate.product(d.sku)
        sale = Sale(d.outcome.voucher_id, (Item(p.sku, p.name.zh, p.name.en, d.tickets, p.price),),
                    d.outcome.offline_left)
        with contextlib.suppress(OSError):  # the payment and the pass are recorded; only the item line is lost
            save_sale(self.runtime.home.terminal_dir(self.runtime.terminal_id), sale)

    def describe_tap(self, result: dict[str, Any]) -> str:
        """The gate's words for its last decision: OPEN or STOP, the amount paid, and why."""
        d = self.last_decision
        gate = result.get("gate") or {}
        if d is None or gate.get("code") != d.code:
            return super().describe_tap(result)
        words = [self.t("gate.open_short" if d.open else "gate.stop_short")]
        if d.amount_fen:
            words.append(format_fen(d.amount_fen))
        words.append(d.message(self.lang))
        return " · ".join(words)

    def on_gate_decided(self, message: GateDecided) -> None:
        self.decisions += 1
        d = message.decision
        self.counts = (d.entries_today, d.remaining)
        self.sale_decided(d.code == PAID)
        while isinstance(self.screen, GateResultScreen):
            self.pop_screen()
        for screen in self.screen_stack:
            if isinstance(screen, GateScreen):
                screen.redraw()
        self.push_screen(GateResultScreen(d))
