"""The footer key bar and the status bar; both redraw in the app's current language."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static

from pos.money import format_fen
from pos.records import parse_time

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
    failure and when it retries ("offline, retrying in 12 s"), else the denylist version."""

    def on_mount(self) -> None:
        self.retranslate()

    def retranslate(self) -> None:
        app: TerminalApp = self.app  # type: ignore[assignment]
        s = app.status
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" ● " + app.t("bar.online" if s.online else "bar.offline") + " ",
                    style="bold green" if s.online else "bold yellow")
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
