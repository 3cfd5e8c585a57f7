"""The footer key bar and the status bar; both redraw in the app's current language."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static

from pos.money import format_fen
from pos.payment.unwritten import KEPT
from pos.records import parse_time
from pos.sync import clockskew

if TYPE_CHECKING:
    from pos.ui.app import TerminalApp

Keys = list[tuple[str, str]]  # (key as shown, translation key of its label)


class KeyBar(Static):
    """The footer: this screen's keys with labels in the current language."""

    def __init__(self, keys: Keys, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys = keys

    def on_mount(self) -> None:
        self.retranslate()

    def retranslate(self) -> None:
        app: TerminalApp = self.app  # type: ignore[assignment]
        text = Text(no_wrap=True, overflow="ellipsis")
        for key, label in self.keys:
            text.append(f"{key}", style="bold reverse")
            text.append(f" {app.t(label)}  ")
        self.update(text)


class StatusBar(Static):
    """Online/offline, vouchers and money waiting for settlement, last sync, then the sync's progress, or its
    failure and when it retries ("offline, retrying in 12 s"), else the denylist version.

    When the clock offset learnt at the last sync is over ``clock.warn_skew_s`` the bar says so first ("clock 2 h
    ahead: set the time"); over ``clock.stop_skew_s`` it says offline sales are stopped instead of online. Payments
    the disk refused after the card paid, kept until written, are said next ("1 not written ¥7.00: free disk
    space")."""

    def on_mount(self) -> None:
        self.retranslate()

    def retranslate(self) -> None:
        app: TerminalApp = self.app  # type: ignore[assignment]
        s = app.status
        text = Text(no_wrap=True, overflow="ellipsis")
        ahead, state = self.clock_state()
        if state == clockskew.STOP:
            text.append(" ● " + app.t("bar.clock_stop") + " ", style="bold white on red")
        else:
            text.append(" ● " + app.t("bar.online" if s.online else "bar.offline") + " ",
                        style="bold green" if s.online else "bold yellow")
        if ahead is not None and state != clockskew.OK:
            text.append(" " + clockskew.describe(ahead, app.lang) + " │", style="bold red")
        kept, kept_fen = KEPT.count(app.runtime.home.ledger_path(app.runtime.terminal_id))
        if kept:  # paid, but the disk refused the payment: kept until it can be written (pos.payment.unwritten)
            text.append(" " + app.t("bar.kept", n=kept, amount=format_fen(kept_fen)) + " │", style="bold red")
        text.append(" " + app.t("bar.pending", n=s.pending_count, amount=format_fen(s.pending_fen)) + " │ ")
        last = parse_time(s.last_sync).strftime("%m-%d %H:%M") if s.last_sync else app.t("bar.never")
        text.append(app.t("bar.last_sync", time=last) + " │ ")
        note = app.sync_note()
        if note is not None:
            text.append(note[0], style=note[1])
        elif s.progress:
            text.append(s.progress, style="bold")
        else:
            text.append(app.t("bar.denylist", v=s.denylist_version))
        self.update(text)

    def clock_state(self) -> tuple[int | None, str]:
        """How far the terminal's clock is ahead (None: never learnt) and whether that is ok, warn or stop."""
        app: TerminalApp = self.app  # type: ignore[assignment]
        home, tid = app.runtime.home, app.runtime.terminal_id
        ahead = home.clock_ahead_ms(tid)
        cfg = home.config.clock
        return ahead, clockskew.level(ahead, cfg.warn_ms, cfg.stop_ms)
