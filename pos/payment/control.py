"""The clerk's hold on a charge in progress: cancel it while it can still be cancelled, and see where it stands.

A charge can be cancelled until its PAY is sent; from then until the card's answer is decided it runs to its
outcome (the card may have debited itself). :class:`ChargeControl` draws that line in one place:

- it is the cancel signal the reader watches (:class:`ecny_nfc.reader.CancelSignal`): set while the clerk asked to
  cancel and no PAY is under way, so a wait for a card, a slow card's exchange and every command APDU before PAY
  stop at once; during PAY it reads as not set and a slow card's delay runs its course;
- :meth:`request_cancel` says which side of the line the request fell on, atomically with :meth:`begin_pay`;
- ``stage`` and ``deadline`` are what the screen shows: waiting for a card, reading it, paying (no longer
  cancellable), or waiting for the same wallet after a tear, with the one deadline the session waits to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from wallet.errors import EcnyError

WAITING = "waiting"  # for a card to come into the field
READING = "reading"  # a card is in the field: reading and checking it (cancellable)
PAYING = "paying"  # PAY was sent: the charge completes, whatever the clerk presses
RETAP = "retap"  # the wallet left after PAY: waiting for the same wallet until ``deadline``
DONE = "done"


class ChargeCancelled(EcnyError):
    """The clerk cancelled before PAY was sent: the command about to go out was not sent."""


class ChargeControl:
    """Cancel and progress of one charge, shared by the session's thread and the screen's."""

    def __init__(self, cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self.clock = clock
        self.stage = WAITING
        self.deadline: float | None = None  # on ``clock``: when the current wait for a card gives up
        self.offer: Any = None  # the charge's instant discount (pos.payment.discounts.Offer), once decided
        self._lock = threading.Lock()
        self._paying = False

    # -- the clerk's side -------------------------------------------------------------------------------------------
    def request_cancel(self) -> bool:
        """Ask to cancel. True when it takes effect (no PAY under way); False when the payment completes anyway."""
        with self._lock:
            self.cancel.set()
            return not self._paying

    @property
    def paying(self) -> bool:
        """Whether a PAY is under way (the charge can no longer be cancelled)."""
        return self._paying

    def seconds_left(self) -> float | None:
        """What is left of the current wait for a card (None when the session is not waiting for one)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())

    # -- the reader's side (CancelSignal) ---------------------------------------------------------------------------
    def is_set(self) -> bool:
        return self.cancel.is_set() and not self._paying

    def wait(self, timeout: float | None = None) -> bool:
        if self._paying:  # only the session's thread starts and ends PAY, and it is the one waiting here
            time.sleep(timeout or 0.0)
            return False
        return self.cancel.wait(timeout)

    # -- the session's side -----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`ChargeCancelled` when the clerk cancelled and no PAY is under way."""
        if self.is_set():
            raise ChargeCancelled("the clerk cancelled the charge")

    def waiting(self, stage: str, timeout: float | None) -> float | None:
        """The session waits for a card for ``timeout`` seconds from now: publish it; return the timeout."""
        self.stage = stage
        self.deadline = None if timeout is None else self.clock() + timeout
        return timeout

    def reading(self) -> None:
        self.stage = READING
        self.deadline = None

    def begin_pay(self) -> None:
        """PAY is about to be sent: from now on a cancel no longer stops the charge (raises if it came first)."""
        with self._lock:
            if self.cancel.is_set():
                raise ChargeCancelled("the clerk cancelled the charge before PAY")
            self._paying = True
            self.stage = PAYING

    def end_pay(self) -> None:
        """The answer to PAY is decided (recorded, refused, or the card left)."""
        with self._lock:
            self._paying = False

    def done(self) -> None:
        with self._lock:
            self._paying = False
            self.stage = DONE
            self.deadline = None
