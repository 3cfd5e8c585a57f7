"""The one time source of the whole project: the card, terminal, gate, ledger, certificates and operator read it.

Everything that asks "what time is it?" calls :func:`now_ms` (or :func:`now`); timeouts and benchmarks keep using
``time.monotonic``/``time.perf_counter``, which measure durations and never jump. By default the source is the wall
clock; a tester or a scenario installs a :class:`VirtualClock` for the whole process (threads included, so the
embedded operator serving in a background thread reads the same time)::

    with clock.use(VirtualClock.at("2026-03-01T09:00")):   # China time unless an offset is given
        ...
        clock.current().advance(90 * 60_000)

:func:`now_ms` is on the tap path: one global lookup and one call.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from wallet.errors import InvalidInput

UTC = dt.UTC
CHINA_TZ = dt.timezone(dt.timedelta(hours=8))  # China Standard Time: UTC+8 all year
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_MS = dt.timedelta(milliseconds=1)


class Clock(Protocol):
    """A source of the current time, in milliseconds since the Unix epoch (UTC)."""

    def now_ms(self) -> int: ...


class WallClock:
    """The machine's clock (the default source)."""

    __slots__ = ()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "WallClock()"


class VirtualClock:
    """A clock that stands still until told to move: ``advance(ms)`` forwards (or back, with a negative amount),
    ``set(ms)`` anywhere."""

    __slots__ = ("ms",)

    def __init__(self, start_ms: int) -> None:
        self.ms = int(start_ms)

    @classmethod
    def at(cls, when: str | dt.datetime) -> VirtualClock:
        """A virtual clock standing at ``when`` (ISO 8601 text, or a datetime; naive means China time)."""
        return cls(parse_instant(when) if isinstance(when, str) else to_ms(when))

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> int:
        """Move the clock by ``ms`` milliseconds; returns the new time."""
        self.ms += int(ms)
        return self.ms

    def set(self, ms: int) -> None:
        self.ms = int(ms)

    def __repr__(self) -> str:
        return f"VirtualClock({from_ms(self.ms).astimezone(CHINA_TZ).isoformat(timespec='milliseconds')})"


_source: Clock = WallClock()
_read: Callable[[], int] = _source.now_ms


def now_ms() -> int:
    """Now, in milliseconds since the epoch (UTC), from the process-wide source."""
    return _read()


def now() -> dt.datetime:
    """Now, as an aware datetime in UTC."""
    return EPOCH + _read() * _MS


def current() -> Clock:
    """The process-wide source."""
    return _source


def set_clock(source: Clock) -> Clock:
    """Make ``source`` the process-wide clock; returns the one it replaces."""
    global _source, _read
    previous = _source
    _source, _read = source, source.now_ms
    return previous


@contextmanager
def use(source: Clock) -> Iterator[Clock]:
    """Read time from ``source`` inside the block (the whole process, all threads), then restore the previous one."""
    previous = set_clock(source)
    try:
        yield source
    finally:
        set_clock(previous)


def to_ms(t: dt.datetime) -> int:
    """A datetime in ms since the epoch (naive means China time)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=CHINA_TZ)
    return (t - EPOCH) // _MS


def from_ms(ms: int) -> dt.datetime:
    """Ms since the epoch as an aware UTC datetime."""
    return EPOCH + ms * _MS


def parse_instant(text: str) -> int:
    """ISO 8601 date or date-time (``2026-03-02T00:05``, ``2026-03-02 00:05:00+08:00``, ``...Z``) in ms since the
    epoch; a time without an offset is China time (UTC+8). Raises :class:`InvalidInput` naming the text."""
    raw = text.strip()
    try:
        t = dt.datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO 8601 time such as 2026-03-02T00:05 or "
                           f"2026-03-02T00:05:00+08:00") from None
    return to_ms(t)
