"""The ticket gate app: a reader loop in a worker thread decides every tap; the screens show each decision."""

from __future__ import annotations

import threading
from pathlib import Path, PurePath
from typing import ClassVar

from textual import work
from textual.message import Message

from pos.gate.ticket_gate import Gate, GateDecision
from pos.runtime import Runtime
from pos.sync.services import Services
from pos.ui.app import TerminalApp
from pos.ui.gate.screens import GateResultScreen, GateScreen
from pos.ui.tester import TESTER_TCSS, TesterScreen

GATE_TCSS = Path(__file__).with_name("gate.tcss")


class GateDecided(Message):
    """The reader loop's decision on one tap (posted from the worker thread)."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__()
        self.decision = decision


class GateApp(TerminalApp):
    """The gate terminal: a reader loop in a worker thread decides every tap."""

    CSS_PATH: ClassVar[list[str | PurePath]] = [*TerminalApp.CSS_PATH, GATE_TCSS, TESTER_TCSS]
    TESTER_SCREEN = TesterScreen

    def __init__(self, runtime: Runtime, gate: Gate, *, lang: str = "zh-CN", services: Services | None = None,
                 hold_s: float | None = None, status_interval: float = 0) -> None:
        super().__init__(runtime, lang=lang, services=services, status_interval=status_interval)
        self.gate = gate
        self.sku = gate.products[0].sku
        self.quantity = 1
        self.hold_s = hold_s if hold_s is not None else gate.settings.result_hold_s
        self.counts = gate.stats()
        self._halt = threading.Event()
        self.decisions = 0

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
            decision = self.gate.admit(rt.reader, self.sku, self.quantity, timeout=0.2, cancel=self._halt,
                                       selection=lambda: (self.sku, self.quantity))
            if decision is None:
                continue
            rt.last_trace = decision.trace
            rt.last_result = decision.to_json("en")
            if rt.broker is not None:
                rt.broker.decided(rt.last_result)
            self.post_message(GateDecided(decision))
            self.gate.housekeeping()  # while the result shows

    def on_gate_decided(self, message: GateDecided) -> None:
        self.decisions += 1
        d = message.decision
        self.counts = (d.entries_today, d.remaining)
        while isinstance(self.screen, GateResultScreen):
            self.pop_screen()
        for screen in self.screen_stack:
            if isinstance(screen, GateScreen):
                screen.redraw()
        self.push_screen(GateResultScreen(d))
