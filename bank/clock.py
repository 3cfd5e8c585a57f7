"""The operator's clock: milliseconds since the epoch, UTC (a terminal's clock is never trusted)."""

from __future__ import annotations

import datetime as dt

from wallet import clock

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def now_ms() -> int:
    """Now, in ms since the epoch."""
    return clock.now_ms()


def ms(t: dt.datetime) -> int:
    """An aware datetime in ms since the epoch (certificate times are whole seconds: exact)."""
    return (t - EPOCH) // dt.timedelta(milliseconds=1)
