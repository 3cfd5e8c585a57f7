"""The base of the clerk and gate apps: language, status polling, the tester and language keys, translated screens."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from pos.i18n import other_language, tr
from pos.money import format_fen
from pos.payment.reasons import Reason
from pos.payment.unwritten import KEPT
from pos.runtime import Runtime
from pos.sync.client import NotProvisioned, OperatorRefused, RetryPolicy
from pos.sync.loop import SyncLoop
from pos.sync.refunds import RefundRefused
from pos.sync.services import OperatorServices, OperatorUnavailable, Services, failure_kind
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


_FAILED = {"offline": "bar.failed_offline", "disk": "bar.failed_disk", "error": "bar.failed_error"}
_FAILED_F5 = {"offline": "bar.failed_offline_f5", "disk": "bar.failed_disk_f5", "error": "bar.failed_error_f5"}


def error_text(app: TerminalApp, exc: BaseException) -> str:
    """What a failed operator call means, in the app's language (the typed errors a clerk meets; others as they
    are)."""
    if isinstance(exc, OperatorUnavailable):
        return app.t("operator.unavailable")
    if isinstance(exc, NotProvisioned):
        return app.t("error.not_provisioned", terminal=app.runtime.terminal_id)
    if isinstance(exc, RefundRefused):
        return app.t("error.refund_refused")
    if isinstance(exc, OperatorRefused):
        return app.t("error.operator_refused", code=exc.code)
    return str(exc)


class SyncEvent(Message):
    """What the background sync loop is doing (posted from its thread): ``start``, ``progress``, ``result`` or
    ``error``."""

    def __init__(self, kind: str, *, done: int = 0, total: int = 0, result: Any = None,
                 error: Exception | None = None) -> None:
        super().__init__()
        self.kind, self.done, self.total, self.result, self.error = kind, done, total, result, error


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

    def synced(self) -> None:
        """A sync round has just succeeded (override to reload what it changed)."""

    def retranslate(self) -> None:
        """Redraw every text in the current language (override and call super)."""
        for bar in self.query(KeyBar):
            bar.retranslate()
        for sbar in self.query(StatusBar):
            sbar.retranslate()


GLOBAL_HELP: Keys = [("F1 / ?", "key.help"), ("F3", "key.language"), ("Ctrl+Q", "help.quit")]


class HelpScreen(ModalScreen[None]):
    """The keys of the screen under it (its footer's keys and its ``KEY_HELP`` lines), then the keys that work on every
    screen."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help-box { width: 66; height: auto; max-height: 22; border: thick $primary; background: $surface; padding: 1 2; }
    """
    BINDINGS: ClassVar = [Binding("escape,enter", "close", show=False)]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        source = getattr(under, "panel", None) or under  # a screen of panels: the keys of the one on show
        keys = list(getattr(source, "keys", None) or getattr(source, "KEYS", []))
        extra = list(getattr(source, "KEY_HELP", []))
        shared = {"F1", "F3", "^Q", *(key for key, _ in GLOBAL_HELP)}  # said once, at the end
        self.rows = [*(row for row in [*keys, *extra] if row[0] not in shared), *GLOBAL_HELP]

    def compose(self) -> ComposeResult:
        app: TerminalApp = self.app  # type: ignore[assignment]
        text = Text()
        text.append(app.t("help.title") + "\n\n", style="bold")
        for key, label in self.rows:
            text.append(f" {key} ", style="bold reverse")
            text.append(" " * max(1, 10 - len(key)) + app.t(label) + "\n")
        text.append("\n" + app.t("help.close"), style="italic")
        yield Static(text, id="help-box")

    def action_close(self) -> None:
        self.app.pop_screen()


class TerminalApp(App[None]):
    """Base of the clerk and gate apps: language, tester panel, status polling, background sync.

    A concrete app extends ``CSS_PATH`` with its screens' style sheets and names the screen F2 opens in
    ``TESTER_SCREEN``. The background sync (:class:`~pos.sync.loop.SyncLoop` over ``services.sync``) runs every
    ``sync_interval`` seconds (default: ``operator.sync_interval_s`` in merchants.yaml; 0: only on F5), backs off
    while it fails, and is triggered by F5 and by each approved sale while online. ``clock`` (monotonic seconds)
    and ``sync_poll`` let tests move time instead of waiting.
    """

    ENABLE_COMMAND_PALETTE = False
    CSS_PATH: ClassVar[list[str | PurePath]] = [BARS_TCSS, Path(__file__).with_name("quit.tcss")]
    TESTER_SCREEN: ClassVar[type[Screen[Any]] | None] = None
    BINDINGS: ClassVar = [
        Binding("f2", "tester", "tester", show=False),
        Binding("f3", "switch_language", "language", show=False),
        Binding("f5", "sync_now", "sync", show=False),
        Binding("ctrl+q", "quit", "quit", show=False, priority=True),
        Binding("f1,question_mark", "help", "help", show=False),
    ]

    def __init__(self, runtime: Runtime, *, lang: str = "zh-CN", services: Services | None = None,
                 status_interval: float = 5.0, sync_interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sync_poll: float = 1.0,
                 backoff: RetryPolicy | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        self.lang = lang
        self.services: Services = services or OperatorServices(runtime.home, runtime.terminal_id)
        self.status = StatusInfo()
        self.status_interval = status_interval
        interval = runtime.home.config.operator.sync_interval_s if sync_interval is None else sync_interval
        self.sync_interval = interval if interval > 0 else math.inf
        self.sync_loop = SyncLoop(runtime.home, runtime.terminal_id, sync=self._sync_round, interval=self.sync_interval,
                                  clock=clock, poll=sync_poll, backoff=backoff, first_delay=self.sync_interval,
                                  on_start=lambda: self.post_message(SyncEvent("start")),
                                  on_result=lambda r: self.post_message(SyncEvent("result", result=r)),
                                  on_error=lambda e: self.post_message(SyncEvent("error", error=e)))
        self.sync_progress: tuple[int, int] | None = None  # (done, total) while a round runs; total -1: starting
        self.sync_failure: str | None = None  # failure_kind of the last round when it failed
        self._manual_sync = False
        self._kept_seen = len(KEPT.written(runtime.home.ledger_path(runtime.terminal_id)))

    def t(self, key: str, **kw: Any) -> str:
        return tr(key, self.lang, **kw)

    # -- language ---------------------------------------------------------------------------------------------------
    def action_switch_language(self) -> None:
        self.lang = other_language(self.lang)
        for screen in self.screen_stack:
            if isinstance(screen, TerminalScreen) and screen.is_ready:
                screen.retranslate()

    # -- help -------------------------------------------------------------------------------------------------------
    def action_help_quit(self) -> None:
        """Ctrl+C (Textual's hint that Ctrl+C does not quit), in the terminal's language."""
        self.notify(self.t("quit.how"), title=self.t("quit.how_title"))

    def action_help(self) -> None:
        """F1 (or ?): every key of the current screen, in the current language; F1 or Esc closes it."""
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen(self.screen))

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
        self.set_interval(1.0, self._tick_countdown)
        self.sync_loop.start()

    def on_unmount(self) -> None:
        self.sync_loop.stop(timeout=1.0)

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
            online = self.services.online() and self.sync_failure != "offline"  # both must say it answers
        except OperatorUnavailable:
            online = False
        return StatusInfo(online, s.pending_count, s.pending_fen, s.last_sync, s.denylist_version,
                          self.status.progress)

    def on_status_updated(self, message: StatusUpdated) -> None:
        self.status = StatusInfo(**{**message.info.__dict__, "progress": self.status.progress})  # progress: ours
        self.announce_kept()
        self.redraw_status()

    def announce_kept(self) -> None:
        """Say it once a payment kept after a storage failure is written (by a sync round, F5 or the next charge:
        :mod:`pos.payment.unwritten`)."""
        written = KEPT.written(self.runtime.home.ledger_path(self.runtime.terminal_id))
        for item in written[self._kept_seen:]:
            self.notify(self.t("kept.written", voucher=item.voucher_id, amount=format_fen(item.amount_fen)))
        self._kept_seen = len(written)

    def set_progress(self, text: str) -> None:
        self.status = StatusInfo(**{**self.status.__dict__, "progress": text})
        self.redraw_status()

    def redraw_status(self) -> None:
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.retranslate()

    def _tick_countdown(self) -> None:
        if self.sync_failure is not None and self.sync_progress is None:
            self.redraw_status()  # "retrying in N s" counts down

    def sync_note(self) -> tuple[str, str] | None:
        """What the status bar says about the sync: its progress, or the failure and when it retries."""
        if self.sync_progress is not None:
            done, total = self.sync_progress
            text = self.t("sync.running") if total < 0 else self.t("sync.progress", done=done, total=total)
            return text, "bold"
        if self.sync_failure is None:
            return None
        left = self.sync_loop.seconds_left()
        if math.isinf(left):
            return self.t(_FAILED_F5[self.sync_failure]), "bold yellow"
        return self.t(_FAILED[self.sync_failure], s=math.ceil(left)), "bold yellow"

    # -- sync -------------------------------------------------------------------------------------------------------
    def _sync_round(self) -> Any:
        """One sync round (in the loop's thread) through the services, reporting progress to the status bar."""
        def progress(done: int, total: int) -> None:
            self.post_message(SyncEvent("progress", done=done, total=total))

        return self.services.sync(progress=progress)

    def action_sync_now(self) -> None:
        """F5: sync at once; the outcome is notified (a round under way already: nothing more)."""
        if self.sync_progress is not None or self.sync_loop.running:
            return
        self._manual_sync = True
        self._show_progress((0, -1))
        self.sync_loop.trigger()

    def _show_progress(self, progress: tuple[int, int] | None) -> None:
        self.sync_progress = progress
        note = self.sync_note() if progress is not None else None
        self.status = StatusInfo(**{**self.status.__dict__, "progress": note[0] if note else ""})

    def sale_decided(self, approved: bool) -> None:
        """Called by a screen after each sale: an approved one goes up at once while the operator answers."""
        if approved and self.status.online and self.sync_failure is None:
            self.sync_loop.trigger()

    def on_sync_event(self, event: SyncEvent) -> None:
        if event.kind == "start":
            self._show_progress(self.sync_progress or (0, -1))
        elif event.kind == "progress":
            self._show_progress((event.done, event.total))
        elif event.kind == "result":
            self.sync_failure = None
            self._show_progress(None)
            self.status = StatusInfo(**{**self.status.__dict__, "online": True})
            if self._manual_sync:
                r = event.result if isinstance(event.result, dict) else {}
                rejected = r.get("rejected", 0)
                self.notify(self.t("sync.done", sent=r.get("uploaded", r.get("sent", 0)), settled=r.get("settled", 0),
                                   rejected=len(rejected) if isinstance(rejected, list) else int(rejected or 0)))
            self._manual_sync = False
            self.poll_status()
            for screen in self.screen_stack:
                if isinstance(screen, TerminalScreen) and screen.is_ready:
                    screen.synced()
        elif event.kind == "error" and event.error is not None:
            self._show_progress(None)
            kind = self.sync_failure = failure_kind(event.error)
            if kind == "offline":
                self.status = StatusInfo(**{**self.status.__dict__, "online": False})
            if self._manual_sync or (kind != "offline" and self.sync_loop.failures == 1):
                detail = (self.t("sync.storage_failed", error=str(event.error)) if kind == "disk"
                          else error_text(self, event.error))
                self.notify(detail, title=self.t("sync.failed"), severity="error")
            self._manual_sync = False
            self.poll_status()
        self.redraw_status()

    def describe_tap(self, result: dict[str, Any]) -> str:
        """A tap's decision (the JSON the tap broker hands back) in the current language, for the tester panel:
        the verdict, the amount, and the reason of a decline in plain words."""
        approved = result.get("status") == "approved"
        words = [self.t("result.approved" if approved else "result.declined")]
        if amount := int(result.get("amount_fen") or 0):
            words.append(format_fen(amount))
        code = result.get("reason")
        if not approved and code:
            try:
                words.append(Reason(code).message(self.lang))
            except ValueError:  # not a payment's reason code: what the terminal said
                words.append(str(result.get("message") or code))
        return " · ".join(words)

    def now(self) -> dt.datetime:
        return self.runtime.clock()

    def charge_timeout_s(self) -> float:
        """How long a tap from the tester panel may wait for the terminal's decision."""
        return float(getattr(self, "charge_timeout", 30.0)) + self.runtime.home.config.risk.recovery_timeout_s + 5
