"""A reader over PC/SC (pcscd + pyscard): ``pcsc`` (every reader) or ``pcsc:READER-NAME-PREFIX``.

Most USB readers sold for POS (ACR122U, ACR1252U) are PC/SC CCID devices: the reader does ISO 14443-4 (chaining,
WTX) itself and PC/SC hands over whole APDUs. The terminal waits for a card with ``SCardGetStatusChange`` in short
slices (so cancel and timeout are seen within ~0.1 s), connects exclusively (no other application can interleave
APDUs mid-payment) and powers the card down when it is done with it. With cards in more than one matching reader at
once the terminal refuses with :class:`MultipleCards` rather than guess which customer is paying.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ecny_nfc.reader import (
    Cancelled,
    CancelSignal,
    CardRemoved,
    MultipleCards,
    NoCard,
    ReaderBusy,
    ReaderError,
    ReaderNotFound,
)
from ecny_nfc.readerlock import ReaderLock

SLICE_MS = 100
_START_PCSCD = ("pcscd is not running: start it (`systemctl start pcscd`, or `pcscd` as root); install it with "
                "`apt-get install pcscd` (scripts/setup does it as root)")


def _import_scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as exc:
        raise ReaderNotFound(f"pyscard is not installed ({exc}): run scripts/setup, or `pip install pyscard` (it "
                             "builds with swig and libpcsclite-dev)") from None
    return scard


class PcscConnection:
    """A card connected exclusively through PC/SC."""

    def __init__(self, reader: PcscReader, reader_name: str, hcard: Any, protocol: int, atr: bytes) -> None:
        self._reader = reader
        self._scard = reader.scard
        self.reader_name = reader_name
        self._hcard = hcard
        self._protocol = protocol
        self.atr = atr
        self.uid = atr
        self._released = False

    def transceive(self, apdu: bytes) -> bytes:
        if self._released:
            raise CardRemoved("card connection already released")
        s = self._scard
        hr, response = s.SCardTransmit(self._hcard, self._protocol, list(apdu))
        if hr != s.SCARD_S_SUCCESS:
            if hr in (s.SCARD_E_READER_UNAVAILABLE, s.SCARD_E_NO_SERVICE, s.SCARD_E_SERVICE_STOPPED):
                raise CardRemoved(f"reader {self.reader_name!r} went away ({s.SCardGetErrorMessage(hr)}): it may "
                                  "have been unplugged; the payment is held for recovery, plug it back in and tap "
                                  "the same wallet")
            raise CardRemoved(f"the card left reader {self.reader_name!r} ({s.SCardGetErrorMessage(hr)})")
        if len(response) < 2:
            raise CardRemoved("the card answered with no status word")
        return bytes(response)

    def is_present(self) -> bool:
        if self._released:
            return False
        hr, *_ = self._scard.SCardStatus(self._hcard)
        return bool(hr == self._scard.SCARD_S_SUCCESS)

    def release(self) -> None:
        """Power the card down and disconnect (the next connect powers it up afresh)."""
        if not self._released:
            self._released = True
            with contextlib.suppress(Exception):
                self._scard.SCardDisconnect(self._hcard, self._scard.SCARD_UNPOWER_CARD)


class PcscReader:
    """The PC/SC readers whose names start with ``prefix`` (all when empty)."""

    def __init__(self, prefix: str = "") -> None:
        self.scard = s = _import_scard()
        self.prefix = prefix
        self.name = f"pcsc:{prefix}" if prefix else "pcsc"
        self._locks: list[ReaderLock] = []
        hr, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        if hr != s.SCARD_S_SUCCESS:
            if hr in (s.SCARD_E_NO_SERVICE, s.SCARD_E_SERVICE_STOPPED):
                raise ReaderNotFound(_START_PCSCD)
            raise ReaderNotFound(f"PC/SC is not available ({s.SCardGetErrorMessage(hr)}): {_START_PCSCD}")
        self._ctx = ctx
        try:
            names = self._readers()
            if not names:
                everything = self._readers(all_readers=True)
                raise ReaderNotFound(
                    f"no PC/SC reader{f' whose name starts with {prefix!r}' if prefix else ''}: plug one in "
                    f"(`pcsc_scan` lists them); readers now: {', '.join(everything) or 'none'}")
            for reader_name in names:
                try:
                    self._locks.append(ReaderLock(f"pcsc-{reader_name}"))
                except ReaderBusy:
                    raise ReaderBusy(f"PC/SC reader {reader_name!r} is in use by another terminal on this machine; "
                                     "close it first, or pick another reader with pcsc:NAME") from None
        except BaseException:
            self.close()
            raise
        self.readers = names

    def _readers(self, all_readers: bool = False) -> list[str]:
        s = self.scard
        hr, names = s.SCardListReaders(self._ctx, [])
        if hr in (s.SCARD_E_NO_READERS_AVAILABLE,) or (hr == s.SCARD_S_SUCCESS and not names):
            return []
        if hr in (s.SCARD_E_NO_SERVICE, s.SCARD_E_SERVICE_STOPPED):
            raise ReaderError(_START_PCSCD)
        if hr != s.SCARD_S_SUCCESS:
            raise ReaderError(f"cannot list PC/SC readers: {s.SCardGetErrorMessage(hr)}")
        return [n for n in names if all_readers or n.startswith(self.prefix)]

    def connect(self, timeout: float | None = None, cancel: CancelSignal | None = None) -> PcscConnection:
        s = self.scard
        deadline = None if timeout is None else time.monotonic() + timeout
        known: dict[str, int] = {}
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("wait for a card cancelled")
            names = self._readers()
            if not names:
                raise ReaderError(f"PC/SC reader {self.name!r} went away: plug it back in")
            remaining = None if deadline is None else deadline - time.monotonic()
            wait_ms = SLICE_MS if remaining is None else max(0, min(SLICE_MS, int(remaining * 1000)))
            if any(n not in known for n in names):
                wait_ms = 0  # learn the current state first
            hr, states = s.SCardGetStatusChange(self._ctx, wait_ms,
                                                [(n, known.get(n, s.SCARD_STATE_UNAWARE)) for n in names])
            if hr == s.SCARD_S_SUCCESS:
                for reader_name, event, _atr in states:
                    known[reader_name] = event & ~s.SCARD_STATE_CHANGED
            elif hr in (s.SCARD_E_NO_SERVICE, s.SCARD_E_SERVICE_STOPPED):
                raise ReaderError(_START_PCSCD)
            elif hr not in (s.SCARD_E_TIMEOUT, s.SCARD_E_UNKNOWN_READER, s.SCARD_E_READER_UNAVAILABLE):
                raise ReaderError(f"PC/SC wait for a card failed: {s.SCardGetErrorMessage(hr)}")
            present = [n for n in names if known.get(n, 0) & s.SCARD_STATE_PRESENT
                       and not known.get(n, 0) & s.SCARD_STATE_MUTE]
            if len(present) > 1:
                raise MultipleCards(f"cards in more than one reader ({', '.join(present)}): present one card at a "
                                    "time, or choose a reader with pcsc:NAME")
            if present:
                conn = self._connect_card(present[0])
                if conn is not None:
                    return conn
                known.pop(present[0], None)
                time.sleep(0.02)  # the card was already gone: wait for pcscd to see it come back
            if deadline is not None and time.monotonic() >= deadline:
                raise NoCard("no card came into the field")

    def _connect_card(self, reader_name: str) -> PcscConnection | None:
        s = self.scard
        hr, hcard, protocol = s.SCardConnect(self._ctx, reader_name, s.SCARD_SHARE_EXCLUSIVE,
                                             s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1)
        if hr == s.SCARD_E_SHARING_VIOLATION:
            raise ReaderBusy(f"the card in {reader_name!r} is held by another application (pcsc_scan, a browser, "
                             "another terminal): close it and tap again")
        if hr != s.SCARD_S_SUCCESS:
            return None
        hr, _name, _state, _proto, atr = s.SCardStatus(hcard)
        return PcscConnection(self, reader_name, hcard, protocol, bytes(atr or b""))

    def close(self) -> None:
        """Release the PC/SC context and the reader locks."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            with contextlib.suppress(Exception):
                self.scard.SCardReleaseContext(ctx)
        for lock in self._locks:
            lock.release()
        self._locks = []
