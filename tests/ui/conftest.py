"""UI test fixtures: a home with a fast test config, stored mock cards, clerk and gate apps with fake services."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from ecny_nfc.mock import MockReader
from pos.cards.manage import issue_cards
from pos.config import PACKAGE_DEFAULT
from pos.home import Home
from pos.runtime import CHINA_TZ, Runtime

COUNTER = "CMGQ0001"
GATE = "HQGT0001"
FIXED_NOW = dt.datetime(2026, 5, 1, 9, 30, tzinfo=CHINA_TZ)


def make_config(tmp_path: Path) -> Path:
    """The shipped merchants.yaml with a short torn-tap wait and a tiny capacity at Tiger Hill's gate."""
    text = PACKAGE_DEFAULT.read_text(encoding="utf-8")
    text = text.replace("recovery_timeout_s: 10", "recovery_timeout_s: 1.5")
    text = text.replace("gate: {daily_capacity: 15000, passback_window_s: 1800}",
                        "gate: {daily_capacity: 3, passback_window_s: 1800}")
    assert "daily_capacity: 3," in text and "recovery_timeout_s: 1.5" in text
    path = tmp_path / "merchants.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class FakeServices:
    """Stands in for the operator: records calls, answers at once."""

    def __init__(self, online: bool = False) -> None:
        self.is_online = online
        self.refunds: list[tuple[str, int | None]] = []
        self.syncs = 0

    def online(self) -> bool:
        return self.is_online

    def sync(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        if progress:
            progress(1, 2)
            progress(2, 2)
        self.syncs += 1
        return {"uploaded": 2, "settled": 2, "rejected": []}

    def refund(self, voucher_id: str, amount_fen: int | None = None) -> dict[str, Any]:
        self.refunds.append((voucher_id, amount_fen))
        return {"status": "refunded", "amount_fen": amount_fen}

    def reconcile(self, day: str | None = None) -> dict[str, Any]:
        return {"matches": True, "operator": {"count": 0, "total_fen": 0}, "differences": []}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home", make_config(tmp_path))
    issue_cards(h, 4, 100_000, 1)  # c0001: ¥1,000.00
    issue_cards(h, 4, 500, 1)  # c0002: ¥5.00
    return h


def runtime(home: Home, terminal_id: str = COUNTER) -> Runtime:
    return Runtime(home, terminal_id, MockReader())


def text_of(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def until(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (fails the test after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


def showing(app: Any, kind: type) -> bool:
    """Whether the app shows a ready screen of type ``kind``, or a ready screen whose panel on show (the counter's
    entry, charge or result) is of type ``kind``."""
    screen = app.screen
    if isinstance(screen, kind):
        return getattr(screen, "is_ready", True)
    return getattr(screen, "is_ready", False) and isinstance(getattr(screen, "panel", None), kind)


def on_show(app: Any) -> Any:
    """The panel on show on the app's screen (the counter's entry, charge or result)."""
    return app.screen.panel
