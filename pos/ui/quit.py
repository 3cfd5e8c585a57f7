"""Quit the terminal? The question Ctrl+Q asks on the counter (:meth:`pos.ui.clerk.app.ClerkApp.action_quit`) and
at the gate (:class:`KeptGuard`).

It is asked when Ctrl+Q comes with a charge open at the counter (Enter cancels the charge, or lets a PAY under way
complete, then quits), over the outcome of a payment Ctrl+Q could not cancel (Enter quits), and when this terminal
keeps payments the disk refused (:mod:`pos.payment.unwritten`) that Ctrl+Q could not write: the card has paid them,
and they live only in this process until written, so quitting leaves each to be recorded only when its wallet taps
here again. The warning says how many, their amount, what quitting means and what to do; F5 tries to write them
again, and once none is kept (F5, or a sync round meanwhile) it asks the plain question.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from pos.money import format_fen
from pos.payment.unwritten import KEPT
from wallet.errors import EcnyError, StorageError

if TYPE_CHECKING:
    from pos.ui.app import TerminalApp

    class GuardedApp(TerminalApp):
        def kept(self) -> tuple[int, int]: ...
        async def write_kept(self) -> EcnyError | None: ...


class QuitScreen(ModalScreen[bool]):
    """Enter (or Ctrl+Q again: the app's key) quits, Esc stays; F5 writes kept payments now."""

    BINDINGS: ClassVar = [Binding("enter", "quit_now", show=False), Binding("escape", "stay", show=False),
                          Binding("f5", "write_kept", show=False)]

    def __init__(self, charge_open: bool = False) -> None:
        super().__init__()
        self.charge_open = charge_open
        self.kept: tuple[int, int] = (0, 0)  # (how many, fen) the warning shows; counted at each redraw
        self.drawn = False

    @property
    def capp(self) -> GuardedApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box"):
            yield Static(id="quit-title")
            yield Static(id="quit-body")
            yield Static(id="quit-todo")
            yield Static(id="quit-hint")

    def on_mount(self) -> None:
        self.drawn = True
        self.redraw()

    def redraw(self) -> None:
        """The texts in the app's language, for what this terminal keeps now."""
        if not self.drawn:
            return
        app = self.capp
        self.kept = (0, 0) if self.charge_open else app.kept()
        n, fen = self.kept
        if self.charge_open:
            title, hint = app.t("quit.charge_title"), app.t("quit.charge_hint")
        elif n:
            title, hint = app.t("quit.kept_title", n=n, amount=format_fen(fen)), app.t("quit.kept_hint")
        else:
            title, hint = app.t("quit.title"), app.t("quit.hint")
        self.query_one("#quit-box", Vertical).set_class(bool(n), "kept")
        self.query_one("#quit-title", Static).update(Text(title, style="bold", justify="center"))
        for wid, key in (("#quit-body", "quit.kept_body"), ("#quit-todo", "quit.kept_todo")):
            line = self.query_one(wid, Static)
            line.display = bool(n)
            line.update(Text(app.t(key), style="bold" if key == "quit.kept_todo" else "", justify="center"))
        self.query_one("#quit-hint", Static).update(Text(hint, justify="center"))

    def action_quit_now(self) -> None:
        if self.charge_open:
            self.dismiss(True)  # the app cancels the charge (or waits for its PAY), then quits
        else:
            self.app.exit()

    def action_stay(self) -> None:
        self.dismiss(False)

    async def action_write_kept(self) -> None:
        """F5: try to write the kept payments again (the app's F5 does not reach a modal screen)."""
        if self.charge_open or not self.kept[0]:
            return
        error = await self.capp.write_kept()
        if not self.is_attached:
            return
        self.redraw()
        if self.kept[0] and error is not None:
            self.notify(str(error), title=self.capp.t("quit.kept_still"), severity="error")  # the detail: as said


class KeptGuard:
    """Mixed into a terminal app (before :class:`pos.ui.app.TerminalApp`): Ctrl+Q never leaves a payment the disk
    refused (:mod:`pos.payment.unwritten`) unsaid. It first writes the kept payments, as a sync round does; any it
    still cannot write, it warns about (:class:`QuitScreen`: Enter or Ctrl+Q again quits anyway, Esc stays)."""

    _writing_kept = False
    runtime: Any

    async def action_quit(self) -> None:
        """Ctrl+Q: quit, unless payments are kept that cannot be written yet (then ask)."""
        await self.quit_unless_kept()

    async def quit_unless_kept(self) -> None:
        app: Any = self
        if isinstance(app.screen, QuitScreen):  # asked already: Ctrl+Q again confirms
            app.exit()
            return
        if self.kept()[0]:
            if self._writing_kept:  # Ctrl+Q again while the write is under way: its outcome decides
                return
            await self.write_kept()
            if self.kept()[0]:
                app.push_screen(QuitScreen())
                return
        app.exit()

    def kept(self) -> tuple[int, int]:
        """(how many, their amount in fen) of the payments this terminal keeps because its disk refused them."""
        return KEPT.count(self.runtime.home.ledger_path(self.runtime.terminal_id))

    async def write_kept(self) -> EcnyError | None:
        """Write the kept payments now, off the event loop, as every sync round does first: the error that stopped
        it (the disk still refuses: they stay kept), else None. Each one written is announced."""
        rt, app = self.runtime, self
        self._writing_kept = True
        try:
            _, error = await asyncio.to_thread(KEPT.write_for, rt.home.ledger_path(rt.terminal_id),
                                               lambda: rt.home.ledger(rt.terminal_id))
        except (OSError, sqlite3.Error) as exc:  # never a crash on the way out: they stay kept
            error = StorageError(f"the ledger of {rt.terminal_id} cannot be opened ({exc})")
        finally:
            self._writing_kept = False
        guarded: Any = app
        guarded.announce_kept()
        guarded.redraw_status()
        guarded.poll_status()  # a payment written is now pending upload
        return error

    def redraw_status(self) -> None:
        super().redraw_status()  # type: ignore[misc]
        stack = self.screen_stack  # type: ignore[attr-defined]  # (``screen`` raises once the app has none left)
        if stack and isinstance(stack[-1], QuitScreen):
            stack[-1].redraw()  # a sync round may have written what the warning counts
