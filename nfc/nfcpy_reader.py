"""A reader over nfcpy's ContactlessFrontend: ``usb``, ``usb:VID:PID``, ``tty:PORT:DRIVER`` and ``udp:HOST:PORT``.

Cards are ISO-DEP (ISO 14443-4 Type 4A) and take APDUs through ``Type4Tag.transceive``, which does I-block chaining
both ways and honours S(WTX) from slow cards. Waiting for a card polls once per ``clf.connect`` call
(``iterations=1``) with a terminate callback, so cancel and timeout are seen between polls (a udp poll with no card
takes nfcpy's one-second SENS_RES wait; a USB poll a few tens of milliseconds). The reader's anticollision selects
one card when several are in the field, and the terminal handles them in turn.

A device path is locked for the life of the reader, so two terminals never drive one reader (or one udp radio).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import time
from typing import Any

from ecny_nfc.reader import (
    Cancelled,
    CancelSignal,
    CardRemoved,
    NoCard,
    ReaderBusy,
    ReaderError,
    ReaderNotFound,
    ReaderNotPermitted,
)
from ecny_nfc.readerlock import ReaderLock

NFCPY_PREFIXES = ("usb", "tty", "udp")
DESELECT = bytes([0xC2])

logging.getLogger("nfc").addHandler(logging.NullHandler())  # nfcpy's retry warnings are not ours to print

_PCSCD_HINT = ("if pcscd is running it holds USB readers it knows (ACR122U and other CCID devices): stop it "
               "(`systemctl stop pcscd.socket pcscd`) or use --reader pcsc; if the kernel's NFC driver holds a PN533 "
               "(`lsmod | grep pn533`), unload it (`modprobe -r pn533_usb`) and blacklist it")
_PERMISSION_HINT = {
    "usb": "give your user access to the USB device (a udev rule such as nfcpy's `python -m nfc --search-tty` "
           "suggests, or add the user to plugdev) or run as root",
    "tty": "add your user to the dialout group (`usermod -aG dialout $USER`, then log in again) or run as root",
}


class _Capture(logging.Handler):
    """Collects nfcpy's debug messages while a device is opened: they say why a partial path found nothing."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


def _import_nfcpy() -> Any:
    try:
        import nfc.clf
        import nfc.tag.tt4

        import nfc
    except ImportError as exc:
        raise ReaderNotFound(f"nfcpy is not installed ({exc}): run scripts/setup, or `pip install nfcpy`") from None
    return nfc


def _open_error(path: str, kind: str, exc: BaseException | None, messages: list[str]) -> ReaderError:
    """The typed error, with its fix, for a device that could not be opened."""
    text = " ".join(messages + ([str(exc)] if exc else []))
    code = getattr(exc, "errno", None)
    if kind == "usb" and exc is not None and ("libusb" in str(exc).lower() or isinstance(exc, FileNotFoundError)):
        return ReaderNotFound(f"reader {path!r}: the system libusb is missing ({exc}); install it "
                              "(`apt-get install libusb-1.0-0`, or run scripts/setup as root)")
    if code == errno.EACCES or "access denied" in text or "Errno 13" in text:
        return ReaderNotPermitted(f"reader {path!r}: permission denied; {_PERMISSION_HINT.get(kind, 'run as root')}")
    if code == errno.EBUSY or "Errno 16" in text or "busy" in text.lower():
        return ReaderBusy(f"reader {path!r} is held by another process or driver; {_PCSCD_HINT}")
    if kind == "udp":
        return ReaderNotFound(f"reader {path!r}: cannot use this udp address ({exc}); use udp:HOST:PORT with a "
                              "host that resolves")
    if kind == "tty":
        return ReaderNotFound(f"no reader on {path!r}: check the serial port exists (`ls /dev/tty*`) and the driver "
                              "name (e.g. tty:USB0:pn532, tty:AMA0:pn532)")
    return ReaderNotFound(f"no supported NFC reader on {path!r}: plug one in (nfcpy drives PN531/PN533, RC-S380, "
                          f"RC-S956, ACR122U); check `lsusb`; {_PCSCD_HINT}; for PC/SC readers use --reader pcsc")


class NfcpyConnection:
    """An activated ISO-DEP card."""

    def __init__(self, reader: NfcpyReader, tag: Any) -> None:
        self._reader = reader
        self._tag = tag
        self.uid = bytes(tag.identifier)
        self._released = False

    def transceive(self, apdu: bytes) -> bytes:
        if self._released:
            raise CardRemoved("card connection already released")
        nfc = self._reader.nfc
        try:
            response = self._tag.transceive(bytearray(apdu))
        except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
            raise CardRemoved(f"the card left the field ({exc or type(exc).__name__})") from None
        except OSError as exc:
            self._reader.broken = exc
            raise CardRemoved(f"the reader stopped answering ({exc}): it may have been unplugged; the payment is "
                              "held for recovery, plug the reader back in and tap the same wallet") from None
        if response is None or len(response) < 2:
            raise CardRemoved("the card answered with no status word")
        return bytes(response)

    def is_present(self) -> bool:
        if self._released:
            return False
        try:
            return bool(self._tag.is_present)
        except Exception:
            return False

    def release(self) -> None:
        """Deselect the card (S(DESELECT)); the next connect polls afresh."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(Exception):
            self._reader.clf.exchange(bytearray(DESELECT), 0.05)


class NfcpyReader:
    """A reader driven by nfcpy. Raises :class:`ReaderNotFound`, :class:`ReaderBusy` or
    :class:`ReaderNotPermitted` (each with the fix) when the device cannot be opened."""

    def __init__(self, path: str) -> None:
        kind = path.split(":", 1)[0]
        if kind not in NFCPY_PREFIXES:
            raise ReaderNotFound(f"{path!r} is not an nfcpy device path: use usb[:VID:PID], tty:PORT:DRIVER or "
                                 "udp:HOST:PORT")
        self.nfc = _import_nfcpy()
        self.name = path
        self.kind = kind
        self.broken: OSError | None = None
        if kind == "udp":
            _check_udp_path(path)
        self.clf = self.nfc.ContactlessFrontend()
        capture = _Capture()
        logger = logging.getLogger("nfc.clf")
        old_level = logger.level
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
        try:
            try:
                found = self.clf.open(path)
            except (OSError, ValueError, socket.gaierror) as exc:
                raise _open_error(path, kind, exc, capture.messages) from None
        finally:
            logger.removeHandler(capture)
            logger.setLevel(old_level)
        if not found:
            raise _open_error(path, kind, None, capture.messages)
        device_path = getattr(self.clf.device, "path", path)
        try:
            self._lock = ReaderLock(f"nfcpy-{device_path}")
        except ReaderBusy:
            self.clf.close()
            raise ReaderBusy(f"reader {path!r} ({device_path}) is in use by another terminal on this machine; "
                             "close it first") from None
        self.device = str(self.clf.device)

    def connect(self, timeout: float | None = None, cancel: CancelSignal | None = None) -> NfcpyConnection:
        deadline = None if timeout is None else time.monotonic() + timeout
        nfc = self.nfc
        first = True

        def terminate() -> bool:
            nonlocal first
            if first:  # always poll at least once, even with timeout 0
                first = False
                return False
            return bool(cancel is not None and cancel.is_set()) or (deadline is not None
                                                                    and time.monotonic() >= deadline)

        options = {"targets": ["106A"], "iterations": 1, "interval": 0.05, "beep-on-connect": False,
                   "on-connect": lambda tag: False}
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("wait for a card cancelled")
            if self.broken is not None:
                raise ReaderError(f"reader {self.name!r} stopped answering ({self.broken}): plug it back in and "
                                  "start the terminal again")
            try:
                tag = self.clf.connect(rdwr=options, terminate=terminate)
            except OSError as exc:
                tag, self.broken = False, exc
            if tag is False:
                self.broken = self.broken or OSError(errno.ENODEV, "device gone")
                raise ReaderError(f"reader {self.name!r} stopped answering: it may have been unplugged; plug it "
                                  "back in and start the terminal again")
            if tag is None:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("wait for a card cancelled")
                raise NoCard("no card came into the field")
            if isinstance(tag, nfc.tag.tt4.Type4Tag):
                return NfcpyConnection(self, tag)
            # A tag that is not an ISO-DEP card (a sticker, a transit card of another kind): not a wallet.
            with contextlib.suppress(Exception):
                self.clf.device.mute()
            if deadline is not None and time.monotonic() >= deadline:
                raise NoCard("no ISO-DEP card came into the field (only other tags)")
            time.sleep(0.1)

    def close(self) -> None:
        """Switch the field off and release the device."""
        with contextlib.suppress(Exception):
            self.clf.close()
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()


def _check_udp_path(path: str) -> None:
    m = re.fullmatch(r"udp(?::([^:]*))?(?::(\d+))?", path)
    if not m:
        raise ReaderNotFound(f"{path!r} is not a udp reader path: use udp:HOST:PORT (e.g. udp:127.0.0.1:54321)")
    host = m.group(1) or "localhost"
    try:
        socket.getaddrinfo(host, None, socket.AF_INET)
    except OSError as exc:
        raise ReaderNotFound(f"reader {path!r}: host {host!r} does not resolve ({exc}); use udp:HOST:PORT with a "
                             "reachable host") from None

