"""The counter terminal's app: starts on the counter screen; F2 opens the tester panel; Ctrl+Q never leaves a
payment half done, nor a payment the disk refused (kept in memory) unsaid; receipts go to the printer set with
``--printer`` or merchants.yaml ``printer:``."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, ClassVar

from pos.printer import open_printer
from pos.printer.device import Printer
from pos.sync.services import Services
from pos.ui.app import TerminalApp
from pos.ui.clerk.charge import ChargePanel
from pos.ui.clerk.screens import CounterScreen
from pos.ui.history import HISTORY_TCSS
from pos.ui.quit import KeptGuard, QuitScreen
from pos.ui.tester import TESTER_TCSS, TesterScreen

CLERK_TCSS = Path(__file__).with_name("clerk.tcss")


class ClerkApp(KeptGuard, TerminalApp):
    """The counter terminal."""

    CSS_PATH: ClassVar[list[str | PurePath]] = [*TerminalApp.CSS_PATH, CLERK_TCSS, HISTORY_TCSS, TESTER_TCSS]
    TESTER_SCREEN = TesterScreen
    TITLE = "ecny-pos"

    def __init__(self, runtime: Any, *, lang: str = "zh-CN", services: Services | None = None,
                 charge_timeout: float | None = None, status_interval: float = 5.0,
                 printer: str | Printer | None = None, **sync: Any) -> None:
        super().__init__(runtime, lang=lang, services=services, status_interval=status_interval, **sync)
        self.printer: Printer | None = open_printer(printer) if isinstance(printer, str) else printer
        self.charge_timeout = (charge_timeout if charge_timeout is not None
                               else runtime.home.config.risk.tap_timeout_s)

    def on_mount(self) -> None:
        self.push_screen(CounterScreen())

    async def action_quit(self) -> None:
        """Ctrl+Q. With a charge in progress it asks first; confirmed (Enter, or Ctrl+Q again), before PAY it cancels
        the charge and quits, after PAY it waits for the outcome, shows it and asks again. Otherwise, when this
        terminal keeps payments the disk refused, it first writes them (as a sync round does); any it still cannot
        write, it warns about and asks (Enter or Ctrl+Q again quits anyway, Esc stays). Otherwise it quits at once."""
        counter = next((s for s in self.screen_stack if isinstance(s, CounterScreen)), None)
        if counter is not None and counter.is_ready and counter.charge.in_progress:
            self._quit_charge(counter.charge)
            return
        await self.quit_unless_kept()

    def _quit_charge(self, charge: ChargePanel) -> None:
        if charge.quitting:
            return
        if isinstance(self.screen, QuitScreen) and self.screen.charge_open:
            self.screen.action_quit_now()  # Ctrl+Q twice: confirmed
            return

        def confirmed(quit_now: bool | None) -> None:
            if quit_now and charge.in_progress:
                charge.quit_when_done()

        self.push_screen(QuitScreen(charge_open=True), confirmed)
