"""Open a reader from its spec string: ``mock`` (default), nfcpy paths (``usb``, ``usb:VID:PID``,
``tty:USB0:pn532``, ``udp:HOST:PORT``) and ``pcsc`` / ``pcsc:READER-NAME-PREFIX``."""

from __future__ import annotations

from ecny_nfc.mock import MockReader
from ecny_nfc.reader import Reader, ReaderNotFound

NFCPY_PREFIXES = ("usb", "tty", "udp")


def open_reader(spec: str = "mock") -> Reader:
    """The reader named by ``spec``; raises :class:`ReaderNotFound`, :class:`ReaderBusy` or
    :class:`ReaderNotPermitted` (each saying how to fix it) when it cannot be opened."""
    kind = spec.split(":", 1)[0]
    if spec == "mock":
        return MockReader()
    if kind in NFCPY_PREFIXES:
        from ecny_nfc.nfcpy_reader import NfcpyReader

        return NfcpyReader(spec)
    if kind == "pcsc":
        from ecny_nfc.pcsc_reader import PcscReader

        return PcscReader(spec[len("pcsc:"):] if spec.startswith("pcsc:") else "")
    raise ReaderNotFound(f"unknown reader {spec!r}: use mock, usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT or "
                         "pcsc[:NAME]")
