"""What the terminal knows about its own clock: the offset it learnt from the operator at its last sync.

Every operator answer carries the operator's time (:data:`wire.signing.H_OPERATOR_TIME`); the client computes the
offset (operator time minus the middle of its own send and receive times) and :func:`pos.sync.upload.sync_once`
keeps the last one in HOME/terminals/TID/clock.json. The terminal then:

- signs its requests with its clock corrected by that offset (the operator still sees the raw clock, see
  :mod:`wire.signing`), so a wrong clock never blocks the sync that reports it;
- warns on the status bar when the clock is off by more than ``clock.warn_skew_s`` (merchants.yaml, default 5 min);
- stops selling offline when it is off by more than ``clock.stop_skew_s`` (default 1 h): a tap is declined
  ``clock_skew`` before PAY, rather than having the card sign a voucher dated on the wrong day.

With no offset ever learnt the terminal sells as usual.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pos.i18n import tr

if TYPE_CHECKING:
    from pos.home import Home

FILE = "clock.json"
OK, WARN, STOP = "ok", "warn", "stop"


@dataclass(frozen=True, slots=True)
class ClockState:
    """The last offset learnt: ``offset_ms`` = operator's clock − terminal's clock (negative: the terminal is
    ahead), measured when the operator's clock read ``measured_ms``."""

    offset_ms: int
    measured_ms: int

    @property
    def ahead_ms(self) -> int:
        """How far the terminal's clock is ahead of the operator's (negative: behind)."""
        return -self.offset_ms


def state_path(home: Home, terminal_id: str) -> Path:
    return home.terminal_dir(terminal_id) / FILE


def load(home: Home, terminal_id: str) -> ClockState | None:
    """The terminal's last learnt offset, or None when it never learnt one (or the file is unreadable)."""
    try:
        data = json.loads(state_path(home, terminal_id).read_text())
        return ClockState(int(data["offset_ms"]), int(data["measured_ms"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(home: Home, terminal_id: str, state: ClockState) -> None:
    """Keep ``state`` (written atomically: a reader sees the old or the new offset)."""
    path = state_path(home, terminal_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"offset_ms": state.offset_ms, "measured_ms": state.measured_ms}))
    os.replace(tmp, path)


def level(ahead_ms: int | None, warn_ms: int, stop_ms: int) -> str:
    """``ok``, ``warn`` (off by more than ``warn_ms``) or ``stop`` (more than ``stop_ms``: no offline sales)."""
    if ahead_ms is None:
        return OK
    off = abs(ahead_ms)
    return STOP if off > stop_ms else WARN if off > warn_ms else OK


def describe(ahead_ms: int, lang: str) -> str:
    """"clock 2 h ahead: set the time" (hours from one hour on, else minutes), in ``lang``."""
    off = abs(ahead_ms)
    way = "ahead" if ahead_ms > 0 else "behind"
    if off >= 3_600_000:
        return tr(f"clock.{way}_h", lang, n=round(off / 3_600_000))
    return tr(f"clock.{way}_min", lang, n=max(1, round(off / 60_000)))
