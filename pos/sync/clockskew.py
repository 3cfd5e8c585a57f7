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

**The business day of a payment** is the one the operator counts it in (:mod:`bank.timerules`): the China Standard
Time day of the voucher's time corrected by the terminal's clock error, when that error is over 5 minutes
(:data:`WINDOW_MS`), else of its timestamp as it is. The terminal applies the same rule with its own measurement:
for a voucher already answered, the day the sync that uploaded it recorded in its ``settlement`` entry (``day``,
written when that sync's offset was over the window; none: the timestamp's day); for one still in the outbox, the
offset learnt at the last sync (the next upload is measured against the same clock). "Today" in the reports is
today on the corrected clock. So ``pos report`` and the clerk's end of day count every voucher in the day the
operator does, also around midnight on a terminal whose clock is hours off.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pos.i18n import tr
from pos.ledger import Entry
from wallet import clock
from wallet.card import CHINA_TZ, china_day_text
from wallet.voucher import Voucher
from wire.signing import MAX_SKEW_MS

if TYPE_CHECKING:
    from pos.home import Home

FILE = "clock.json"
OK, WARN, STOP = "ok", "warn", "stop"
WINDOW_MS = MAX_SKEW_MS  # a clock off by less is taken as right, on both sides (bank.timerules.SKEW_WINDOW_MS)


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


def correction_ms(ahead_ms: int | None) -> int:
    """What to take off the terminal's clock to get the operator's day: the error when it is over the window."""
    return ahead_ms if ahead_ms is not None and abs(ahead_ms) > WINDOW_MS else 0


def business_day(timestamp_ms: int, ahead_ms: int | None) -> str:
    """The day (YYYY-MM-DD, China time) the operator counts a voucher of ``timestamp_ms`` in, from a terminal whose
    clock is ``ahead_ms`` ahead."""
    return china_day_text(timestamp_ms - correction_ms(ahead_ms))


def settled_days(settlements: list[Entry]) -> dict[str, str]:
    """{voucher id: the corrected day its settlement entry recorded, or "" when it recorded none (answered at a
    sync whose offset was within the window: the timestamp's own day)}."""
    return {e.voucher_id: str(e.data.get("day") or "") for e in settlements if e.voucher_id}


def payment_day(payment: Entry, ahead_ms: int | None, days: dict[str, str]) -> str:
    """A payment entry's business day: the day recorded when it was answered (``days``, :func:`settled_days`);
    answered without one, its timestamp's day; not answered yet, its timestamp's day corrected by ``ahead_ms``
    (the offset learnt at the last sync)."""
    day = days.get(payment.voucher_id or "")
    if day:
        return day
    ts = Voucher.decode(bytes.fromhex(payment.data["voucher"])).body.timestamp_ms
    return business_day(ts, None if day == "" else ahead_ms)


def today(ahead_ms: int | None, now: dt.datetime | None = None) -> dt.date:
    """Today on the corrected clock (``now``: the terminal's clock, default :func:`wallet.clock.now`)."""
    at = (now or clock.now()) - dt.timedelta(milliseconds=correction_ms(ahead_ms))
    return at.astimezone(CHINA_TZ).date()
