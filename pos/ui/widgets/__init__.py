"""Widgets every screen shares: the translated key bar and the status bar (styles in ``bars.tcss``)."""

from __future__ import annotations

from pathlib import Path

from pos.ui.widgets.bars import KeyBar, Keys, StatusBar

BARS_TCSS = Path(__file__).with_name("bars.tcss")

__all__ = ["BARS_TCSS", "KeyBar", "Keys", "StatusBar"]
