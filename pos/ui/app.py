"""The base of the clerk and gate apps: language, status polling, the tester and language keys, translated screens."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from pos.i18n import other_language, tr
from pos.runtime import Runtime
from pos.sync.services import OperatorServices, OperatorUnavailable, Services
from pos.ui.widgets import BARS_TCSS, KeyBar, Keys, StatusBar


@dataclass(frozen=True)
class StatusInfo:
    """What the status bar shows."""

    online: bool = False
    pending_count: int = 0
    pending_fen: int = 0
    last_sync: str | None = None
    denylist_version: int = 0
    progress: str = ""


class StatusUpdated(Message):
    """New status bar figures (posted from a worker thread)."""

    def __init__(self, info: StatusInfo) -> None:
        super().__init__()
        self.info = info


class TerminalScreen(Screen[Any]):
    """A screen whose texts follow the app's language."""

    KEYS: ClassVar[Keys] = []

    @property
    def tapp(self) -> TerminalApp:
        return self.app  # type: ignore[return-value]

    def t(self, key: str, **kw: Any) -> str:
        return self.tapp.t(key, **kw)

    is_ready = False

    def on_mount(self) -> None:
        # Children of nested containers may still be mounting: set texts once the whole screen is there.
        self.call_after_refresh(self._ready)

    def _ready(self) -> None:
        self.is_ready = True
        self.ready()

    def ready(self) -> None:
        """The screen and all its children are mounted (override to fill tables, start workers)."""
        self.retranslate()

    def retranslate(self) -> None:
        """Redraw every text in the current language (override and call super)."""
        for bar in self.query(KeyBar):
            bar.retranslate()
        for sbar in self.query(StatusBar):
            sbar.retranslate()


class TerminalApp(App[None]):
    """Base of the clerk and gate apps: language, tester panel, status polling.

    A concrete app extends ``CSS_PATH`` with its screens' style sheets and names the screen F2 opens in
    ``TESTER_SCREEN``.
    """

    ENABLE_COMMAND_PALETTE = False
    CSS_PATH: ClassVar[list[str | PurePath]] = [BARS_TCSS]
    TESTER_SCREEN: ClassVar[type[Screen[Any]] | None] = None
    BINDINGS: ClassVar = [
        Binding("f2", "tester", "tester", show=False),
        Binding("f3", "switch_language", "language", show=False),
        Binding("ctrl+q", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, runtime: Runtime, *, lang: str = "zh-CN", services: Services | None = None,
                 status_interval: float = 5.0) -> None:
        super().__init__()
        self.runtime = runtime
        self.lang = lang
        self.services: Services = services or OperatorServices(runtime.home, runtime.terminal_id)
        self.status = StatusInfo()
        self.status_interval = status_interval

    def t(self, key: str, **kw: Any) -> str:
        return tr(key, self.lang, **kw)

    # -- language ---------------------------------------------------------------------------------------------------
    def action_switch_language(self) -> None:
        self.lang = other_language(self.lang)
        for screen in self.screen_stack:
            if isinstance(screen, TerminalScreen) and screen.is_ready:
                screen.retranslate()

    # -- tester panel -----------------------------------------------------------------------------------------------
    def action_tester(self) -> None:
        if self.TESTER_SCREEN is None:
            return
        if isinstance(self.screen, self.TESTER_SCREEN):
            self.pop_screen()
        else:
            self.push_screen(self.TESTER_SCREEN())

    # -- status -----------------------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.poll_status()
        if self.status_interval > 0:
            self.set_interval(self.status_interval, self.poll_status)

    def poll_status(self) -> None:
        self.run_worker(self._read_status, thread=True, group="status", exclusive=True)

    def _read_status(self) -> None:
        info = self.read_status()
        self.post_message(StatusUpdated(info))

    def read_status(self) -> StatusInfo:
        """Gather the status bar figures (blocking: ledger and one operator check)."""
        with self.runtime.home.ledger(self.runtime.terminal_id) as ledger:
            s = ledger.sync_status()
        try:
            online = self.services.online()
        except OperatorUnavailable:
            online = False
        return StatusInfo(online, s.pending_count, s.pending_fen, s.last_sync, s.denylist_version,
                          self.status.progress)

    def on_status_updated(self, message: StatusUpdated) -> None:
        self.status = message.info
        self.redraw_status()

    def set_progress(self, text: str) -> None:
        self.status = StatusInfo(**{**self.status.__dict__, "progress": text})
        self.redraw_status()

    def redraw_status(self) -> None:
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.retranslate()

    def now(self) -> dt.datetime:
        return self.runtime.clock()

    def charge_timeout_s(self) -> float:
        """How long a tap from the tester panel may wait for the terminal's decision."""
        return float(getattr(self, "charge_timeout", 30.0)) + self.runtime.home.config.risk.recovery_timeout_s + 5
