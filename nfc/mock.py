"""The mock reader: cards presented in-process, with fault injection for testers.

Faults apply to the next tap of a presented card:
- ``tear_after=N``: the card processes the N-th APDU, but its answer is lost and the card leaves the field
  (``0``: it leaves before the first APDU);
- ``tear_at=INS``: the same at the first command with that instruction byte (``0x50``: PAY), however many
  APDUs come before it;
- ``corrupt_response=N``: one byte of the N-th answer's data is flipped on the way back;
- ``delay=S``: every APDU takes S seconds longer (a slow card). The delay comes before the card sees the command
  and waits on the cancel signal the connection was made with: a cancel ends it at once with :class:`Cancelled`,
  and the command never reaches the card.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ecny_nfc.reader import Cancelled, CancelSignal, CardRemoved, MultipleCards, NoCard


class Card(Protocol):
    """Anything with ``process(apdu) -> response`` and ``reset()``, e.g. :class:`wallet.card.WalletApplet`."""

    def process(self, apdu: bytes) -> bytes: ...

    def reset(self) -> None: ...


@dataclass
class Faults:
    """Faults for one tap (see the module docstring)."""

    tear_after: int | None = None
    corrupt_response: int | None = None
    delay: float = 0.0
    tear_at: int | None = None

    def __post_init__(self) -> None:
        if self.tear_after is not None and self.tear_after < 0:
            raise ValueError("tear_after must be >= 0")
        if self.corrupt_response is not None and self.corrupt_response < 1:
            raise ValueError("corrupt_response counts APDUs from 1")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if self.tear_at is not None and not 0 <= self.tear_at <= 0xFF:
            raise ValueError("tear_at is an instruction byte")


Observer = Callable[[bytes, bytes | None], None]


class MockConnection:
    """A presented card in the mock field."""

    def __init__(self, reader: MockReader, card: Card, faults: Faults, uid: bytes,
                 cancel: CancelSignal | None = None) -> None:
        self._reader = reader
        self._cancel = cancel
        self._card = card
        self._faults = faults
        self.uid = uid
        self.count = 0
        self._present = True

    def transceive(self, apdu: bytes) -> bytes:
        if not self._present:
            raise CardRemoved("card left the field")
        self.count += 1
        if self._faults.tear_after == 0:
            self._present = False
            raise CardRemoved("card pulled away before the first APDU")
        if self._faults.delay:
            if self._cancel is None:
                time.sleep(self._faults.delay)
            elif self._cancel.wait(self._faults.delay):
                self.count -= 1  # the command never reached the card
                raise Cancelled("cancelled while the slow card was busy")
        response = self._card.process(bytes(apdu))
        if ((self._faults.tear_after is not None and self.count >= self._faults.tear_after)
                or (self._faults.tear_at is not None and len(apdu) > 1 and apdu[1] == self._faults.tear_at)):
            self._present = False
            self._reader._notify(apdu, None)
            raise CardRemoved(f"card pulled away after APDU {self.count}")
        if self._faults.corrupt_response == self.count and len(response) > 2:
            i = (len(response) - 2) // 2
            response = response[:i] + bytes([response[i] ^ 0x5A]) + response[i + 1 :]
        self._reader._notify(apdu, response)
        return response

    def is_present(self) -> bool:
        return self._present

    def release(self) -> None:
        self._present = False


class MockReader:
    """An in-process reader. ``present`` puts a card in the field; ``connect`` takes the next one."""

    name = "mock"

    def __init__(self) -> None:
        self._queue: deque[tuple[Card, Faults, bytes]] = deque()
        self._cond = threading.Condition()
        self._observers: list[Observer] = []
        self._uid_seq = 0
        self._collision = False
        self.closed = False

    def present(self, card: Card, faults: Faults | None = None, uid: bytes | None = None) -> None:
        """Bring ``card`` into the field (queued behind cards already waiting)."""
        with self._cond:
            self._uid_seq += 1
            self._queue.append((card, faults or Faults(), uid or b"\x08" + self._uid_seq.to_bytes(3, "big")))
            self._cond.notify_all()

    def present_together(self, *cards: Card) -> None:
        """Several cards in the field at once: the next connect refuses with :class:`MultipleCards`."""
        with self._cond:
            self._collision = True
            for card in cards:
                self._uid_seq += 1
                self._queue.append((card, Faults(), b"\x08" + self._uid_seq.to_bytes(3, "big")))
            self._cond.notify_all()

    def observe(self, observer: Observer) -> None:
        """Call ``observer(command, response)`` for every exchange (response None when torn)."""
        self._observers.append(observer)

    def _notify(self, command: bytes, response: bytes | None) -> None:
        for obs in self._observers:
            obs(command, response)

    def connect(self, timeout: float | None = None, cancel: CancelSignal | None = None) -> MockConnection:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("wait for a card cancelled")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise NoCard("no card presented")
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            if self._collision:
                self._collision = False
                self._queue.clear()
                raise MultipleCards("more than one card in the field: present one card at a time")
            card, faults, uid = self._queue.popleft()
        card.reset()
        return MockConnection(self, card, faults, uid, cancel)

    def close(self) -> None:
        self.closed = True
