"""What the card emulators share: the card taken out of its store per tap, APDU counting and tester faults.

An emulator (``iso_dep_card`` for nfcpy's udp radio, ``vpcd_card`` for pcscd's vpcd driver) calls
:meth:`EmulatedCard.begin` when a reader activates the card, :meth:`EmulatedCard.process` for every command APDU and
:meth:`EmulatedCard.end` when the reader lets go (or the card vanishes). The card source is opened (and so locked,
for a :class:`wallet.store.CardStore`) for one activation only, so other commands on the card run between taps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass

from ecny_nfc.mock import Card
from wallet.errors import EcnyError

CardSource = Callable[[], AbstractContextManager[Card]]


def fixed_card(card: Card) -> CardSource:
    """A card source for an in-memory card (tests): every activation gets the same object."""
    return lambda: nullcontext(card)


@dataclass
class EmulatorFaults:
    """Faults for the card: a tear applies to the first tap that exchanges APDUs (so a retap can recover), a slow
    card stays slow.

    - ``tear_after=N``: the card processes the N-th APDU, its answer is lost and the card leaves the field
      (``0``: it leaves before answering the first APDU);
    - ``slow=S``: every APDU takes S seconds longer (ISO-DEP sends S(WTX) meanwhile);
    - ``away=S``: after a tear the card stays out of the field for S seconds before it can be tapped again.
    """

    tear_after: int | None = None
    slow: float = 0.0
    away: float = 0.0

    def __post_init__(self) -> None:
        if self.tear_after is not None and self.tear_after < 0:
            raise ValueError("tear_after must be >= 0")
        if self.slow < 0 or self.away < 0:
            raise ValueError("slow and away must be >= 0 seconds")


@dataclass
class TapRecord:
    """One activation that exchanged APDUs."""

    apdus: int
    torn: bool


class EmulatedCard:
    """The card side of a tap, independent of the radio or the PC/SC transport."""

    def __init__(self, source: CardSource, faults: EmulatorFaults | None = None,
                 on_tap: Callable[[TapRecord], None] | None = None) -> None:
        self._source = source
        self._faults = faults or EmulatorFaults()
        self._on_tap = on_tap
        self._stack: ExitStack | None = None
        self._card: Card | None = None
        self._count = 0
        self.taps: list[TapRecord] = []
        self.away_until = 0.0
        self.changed = threading.Condition()

    @property
    def active(self) -> bool:
        return self._card is not None

    def is_away(self) -> bool:
        """Whether the card is out of the field after a tear."""
        return time.monotonic() < self.away_until

    def begin(self) -> bool:
        """A reader activates the card: open it from its source (power-on reset). False if it cannot be had now."""
        self.end()
        if self.is_away():
            return False
        stack = ExitStack()
        try:
            card = stack.enter_context(self._source())
        except EcnyError:
            stack.close()
            return False
        card.reset()
        self._stack, self._card, self._count = stack, card, 0
        return True

    def process(self, apdu: bytes) -> bytes | None:
        """Answer one command APDU; None when the card vanishes instead of answering (a tear fault)."""
        if self._card is None:
            return None
        self._count += 1
        faults = self._faults
        if faults.tear_after == 0:
            self._tear()
            return None
        if faults.slow:
            time.sleep(faults.slow)
        response = self._card.process(bytes(apdu))
        if faults.tear_after is not None and self._count >= faults.tear_after:
            self._tear()
            return None
        return response

    def _tear(self) -> None:
        self.away_until = time.monotonic() + self._faults.away
        self._finish(torn=True)

    def end(self) -> None:
        """The reader let go of the card (deselect, RF off, power off, a new poll): close it."""
        if self._card is not None:
            self._finish(torn=False)

    def _finish(self, torn: bool) -> None:
        stack, count = self._stack, self._count
        self._stack, self._card, self._count = None, None, 0
        if stack is not None:
            stack.close()
        if count or torn:
            record = TapRecord(count, torn)
            self._faults = EmulatorFaults(slow=self._faults.slow)  # a tear is for the first tap only
            with self.changed:
                self.taps.append(record)
                self.changed.notify_all()
            if self._on_tap is not None:
                self._on_tap(record)

    def wait_taps(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` taps have ended (for tests and ``--once``)."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.taps) >= n, timeout)
