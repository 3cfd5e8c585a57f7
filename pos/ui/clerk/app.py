"""The counter terminal's app: starts on the counter screen; F2 opens the tester panel; Ctrl+Q never leaves a
payment half done, nor a payment the disk refused (kept in memory) unsaid; receipts go to the printer set with
``--printer`` or merchants.yaml ``printer:``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path, PurePath
from typing import Any, ClassVar

from pos.payment.unwritten import KEPT
from pos.printer import open_printer
from pos.printer.device import Printer
from pos.sync.services import Services
from pos.ui.app import TerminalApp
from pos.ui.clerk.charge import ChargePanel
from pos.ui.clerk.quit import QuitScreen
from pos.ui.clerk.screens import CounterScreen
from pos.ui.history import HISTORY_TCSS
from pos.ui.tester import TESTER_TCSS, TesterScreen
from wallet.errors import EcnyError, StorageError

CLERK_TCSS = Path(__file__).with_name("clerk.tcss")


class ClerkApp(TerminalApp):
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
        self._writing_kept = False

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
        if isinstance(self.screen, QuitScreen):  # asked already: Ctrl+Q again confirms
            self.exit()
            return
        if self.kept()[0]:
            if self._writing_kept:  # Ctrl+Q again while the write is under way: its outcome decides
                return
            await self.write_kept()
            if self.kept()[0]:
                self.push_screen(QuitScreen())
                return
        self.exit()

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

    # -- payments the disk refused (pos.payment.unwritten) ----------------------------------------------------------
    def kept(self) -> tuple[int, int]:
        """(how many, their amount in fen) of the payments this terminal keeps because its disk refused them."""
        return KEPT.count(self.runtime.home.ledger_path(self.runtime.terminal_id))

    async def write_kept(self) -> EcnyError | None:
        """Write the kept payments now, off the event loop, as every sync round does first: the error that stopped
        it (the disk still refuses: they stay kept), else None. Each one written is announced."""
        rt = self.runtime
        self._writing_kept = True
        try:
            _, error = await asyncio.to_thread(KEPT.write_for, rt.home.ledger_path(rt.terminal_id),
                                               lambda: rt.home.ledger(rt.terminal_id))
        except (OSError, sqlite3.Error) as exc:  # never a crash on the way out: they stay kept
            error = StorageError(f"the ledger of {rt.terminal_id} cannot be opened ({exc})")
        finally:
            self._writing_kept = False
        self.announce_kept()
        self.redraw_status()
        self.poll_status()  # a payment written is now pending upload
        return error

    def redraw_status(self) -> None:
        super().redraw_status()
        if isinstance(self.screen, QuitScreen):
            self.screen.redraw()  # a sync round may have written what the warning counts
