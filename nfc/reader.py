"""The reader interface: wait for a card, exchange APDUs with it, notice when it leaves.

It moves bytes and knows no payment logic. Implementations: the mock reader (in-process cards, fault injection),
nfcpy (ISO-DEP over PN53x/RC-S380/ACR122U/PN532/udp) and PC/SC (pyscard). A ``CardConnection.transceive`` takes a
command APDU and returns the full response APDU (data + SW1 SW2), the shape of nfcpy's ``Type4Tag.transceive``
and of a PC/SC ``transmit`` joined back together.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from wallet.errors import EcnyError


class CancelSignal(Protocol):
    """What a reader watches to stop waiting: a :class:`threading.Event`, or an object that answers like one (a
    payment session's, which stops being set once the payment can no longer be cancelled)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class ReaderError(EcnyError):
    """The reader failed; the message says what to do about it."""


class ReaderNotFound(ReaderError):
    """No reader at the given path."""


class ReaderBusy(ReaderError):
    """The reader is held by another process or driver."""


class NoCard(ReaderError):
    """No card came into the field before the timeout."""


class Cancelled(ReaderError):
    """The wait for a card was cancelled."""


class CardRemoved(ReaderError):
    """The card left the field during an exchange; the last command may or may not have reached it."""


class MultipleCards(ReaderError):
    """More than one card is in the field."""


@runtime_checkable
class CardConnection(Protocol):
    """A card in the field."""

    uid: bytes

    def transceive(self, apdu: bytes) -> bytes:
        """Send a command APDU, return the response APDU; raise :class:`CardRemoved` if the card is gone."""
        ...

    def is_present(self) -> bool:
        """Whether the card is still in the field."""
        ...

    def release(self) -> None:
        """Done with this card (the terminal turns to the next one)."""
        ...


@runtime_checkable
class Reader(Protocol):
    """A contactless reader."""

    name: str

    def connect(self, timeout: float | None = None, cancel: CancelSignal | None = None) -> CardConnection:
        """Wait for a card; raise :class:`NoCard` on timeout and :class:`Cancelled` when ``cancel`` is set.

        A connection may keep ``cancel``: where its exchange waits (a mock card's delay) it stops with
        :class:`Cancelled` when ``cancel`` is set, before the command reaches the card."""
        ...

    def close(self) -> None:
        """Release the reader."""
        ...


class ReaderNotPermitted(ReaderError):
    """The reader exists but this user may not open it."""
