"""What a running terminal holds besides its screens: reader, tap broker and socket, last trace, services.

Plain Python (no Textual), so the UIs stay thin and the benchmarks and tests can drive the same paths.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecny_nfc.mock import MockReader
from ecny_nfc.reader import Reader
from pos.cards.tap_socket import TapBroker, TapServer
from pos.home import Home
from pos.payment.card_client import TraceEntry
from pos.payment.checkout import Checkout, CheckoutClosed
from pos.payment.control import ChargeControl
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from wallet import clock
from wallet.card import CHINA_TZ
from wallet.errors import EcnyError


def wall_clock() -> dt.datetime:
    """Now, in China Standard Time (the terminals' display time)."""
    return clock.now().astimezone(CHINA_TZ)


@dataclass
class Runtime:
    """One terminal in a process: home, id, reader, and (with a mock reader) the tap broker."""

    home: Home
    terminal_id: str
    reader: Reader
    clock: Callable[[], dt.datetime] = wall_clock
    monotonic: Callable[[], float] = time.monotonic
    broker: TapBroker | None = None
    server: TapServer | None = None
    last_trace: list[TraceEntry] = field(default_factory=list)
    last_result: dict[str, Any] | None = None
    _checkout: Checkout | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.merchant, self.terminal = self.home.terminal(self.terminal_id)
        if self.broker is None and isinstance(self.reader, MockReader):
            self.broker = TapBroker(self.home, self.terminal_id, self.reader)

    def listen(self, lang: Callable[[], str] = lambda: "en") -> None:
        """Accept ``pos card tap`` from other shells (mock reader only)."""
        if self.broker is not None and self.server is None:
            self.server = TapServer(self.home, self.terminal_id, self.broker, self.terminal.kind, lang)
            self.server.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.broker is not None:
            self.broker.disarm()
        self.reader.close()
        self._closed = True
        if self._checkout is not None:
            self._checkout.close()  # after a charge under way; the charge after it is refused

    def charge(self, amount_fen: int, timeout: float, cancel: threading.Event | ChargeControl) -> Outcome:
        """Take one payment (blocking: call it from a worker thread). Never raises. ``cancel`` cancels it until PAY
        is sent (a :class:`ChargeControl` also shows the screen where the charge stands)."""
        if self.broker is not None:
            self.broker.arm()
        outcome: Outcome | None = None
        try:
            if self._checkout is None:
                if self._closed:
                    raise CheckoutClosed("the terminal is shutting down")
                self._checkout = Checkout(self.home, self.terminal_id)  # kept: warm caches for the next customer
            outcome = self._checkout.take(self.reader, amount_fen, timeout=timeout, cancel=cancel)
        except EcnyError as exc:
            outcome = Outcome("declined", amount_fen, Reason.TERMINAL_ERROR, detail=str(exc))
        except Exception as exc:  # never a frozen charge screen: an unforeseen fault declines the charge, named
            outcome = Outcome("declined", amount_fen, Reason.TERMINAL_ERROR, detail=f"{type(exc).__name__}: {exc}")
        finally:
            result = outcome.to_json("en") if outcome is not None else None
            if self.broker is not None:
                self.broker.disarm(result)
        self.last_trace = outcome.trace
        self.last_result = result
        if self._checkout is not None:
            self._checkout.idle()  # the decision is out: the customer reads the screen while the WAL is copied
        return outcome
