"""The wallet card as a virtual smart card for vsmartcard's vpcd driver, so pcscd and pyscard tap it.

vpcd (a pcscd reader driver) listens on TCP (Debian's default 35963, and the next port for its second slot); the
card connects as a client. Every message either way is a 2-byte big-endian length and a payload. A 1-byte payload
from vpcd is a control code (0 power off, 1 power on, 2 reset, 4 get ATR, answered with the ATR); anything longer
is a command APDU, answered with the response APDU. Connected means inserted; closing the connection pulls the card.

pcscd writes the length and the APDU in two writes; with Nagle on its side and delayed ACKs on ours each APDU
would stall ~40 ms, so the card sets TCP_QUICKACK before every read (and TCP_NODELAY for its own writes).

A tap (one lock of the card in its store) runs from the first APDU after power-on or reset to power-off, reset,
the connection closing, or a silent reader for a few seconds.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from functools import reduce

from ecny_nfc.emulation import CardSource, EmulatedCard, EmulatorFaults
from ecny_nfc.iso_dep_card import EmulatorError

VPCD_PORT = 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
# A contactless ISO 14443-4 card as PC/SC part 3 presents it: 3B 8n 80 01 <historical bytes> TCK.
HISTORICAL = b"eCNY"
_ATR_BODY = bytes([0x3B, 0x80 | len(HISTORICAL), 0x80, 0x01]) + HISTORICAL
ATR = _ATR_BODY + bytes([reduce(lambda a, b: a ^ b, _ATR_BODY[1:], 0)])
SESSION_IDLE = 5.0
REINSERT_DELAY = 0.5


def parse_vpcd_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 35963) as (host, port)."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(VPCD_PORT))
    if not port.isdigit():
        raise EmulatorError(f"{text!r} is not HOST:PORT of a vpcd reader (e.g. localhost:35963)")
    return host or "localhost", int(port)


class VpcdCard:
    """A wallet card inserted into a vpcd reader at ``host:port`` (it reconnects after a tear, like a retap)."""

    def __init__(self, source: CardSource | None, host: str = "localhost", port: int = VPCD_PORT,
                 faults: EmulatorFaults | None = None, card: EmulatedCard | None = None,
                 connect_timeout: float = 10.0) -> None:
        if card is None:
            if source is None:
                raise ValueError("give a card source or an EmulatedCard")
            card = EmulatedCard(source, faults)
        self.card = card
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.inserted = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> VpcdCard:
        """Insert the card (connect to vpcd) in a background thread; raises if vpcd cannot be reached."""
        self._connect(self.connect_timeout)
        self._thread = threading.Thread(target=self.serve, name=f"vpcd-card-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Pull the card out (close the connection) and stop."""
        self._stop.set()
        self._disconnect()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.card.end()

    def __enter__(self) -> VpcdCard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as exc:
                if self._stop.is_set() or time.monotonic() >= deadline:
                    raise EmulatorError(
                        f"cannot reach vpcd at {self.host}:{self.port} ({exc}): is pcscd running with the vpcd "
                        "driver? Install vsmartcard-vpcd and pcscd (scripts/setup does it as root), start pcscd, "
                        "and use the port in /etc/reader.conf.d/vpcd (35963, or 35964 for the second slot)"
                    ) from None
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.2)
        self._sock = sock
        self.inserted.set()

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        self.inserted.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- the wire ---------------------------------------------------------------------------------------------------
    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        """``n`` bytes; None on a timeout before the first byte; raises ConnectionError when vpcd hangs up."""
        buf = b""
        while len(buf) < n:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                if not buf:
                    return None
                if self._stop.is_set():
                    raise ConnectionError("stopping") from None
                continue
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            buf += chunk
        return buf

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def serve(self) -> None:
        """Answer vpcd until stopped; after a tear, stay away for the fault's ``away`` time, then re-insert."""
        last = time.monotonic()
        while not self._stop.is_set():
            sock = self._sock
            if sock is None:
                # Stay out at least one pcscd presence poll (0.4 s), or pcscd may never see the card come back.
                wait = max(REINSERT_DELAY, self.card.away_until - time.monotonic())
                if self._stop.wait(wait):
                    return
                try:
                    self._connect(self.connect_timeout)
                except EmulatorError:
                    if self._stop.is_set():
                        return
                    raise
                continue
            try:
                header = self._recv_exact(sock, 2)
                if header is None:
                    if self.card.active and time.monotonic() - last > SESSION_IDLE:
                        self.card.end()
                    continue
                (size,) = struct.unpack(">H", header)
                payload = self._recv_exact(sock, size) if size else b""
                while payload is None:
                    payload = self._recv_exact(sock, size)
            except (ConnectionError, OSError):
                self.card.end()
                self._disconnect()
                if self._stop.is_set():
                    return
                self._stop.wait(0.2)  # vpcd went away (pcscd restarting): try again shortly
                continue
            last = time.monotonic()
            self._on_message(sock, payload)

    def _on_message(self, sock: socket.socket, payload: bytes) -> None:
        if len(payload) == 1:
            code = payload[0]
            if code in (CTRL_OFF, CTRL_RESET, CTRL_ON):
                self.card.end()  # a tap ends at power-off or reset; the next APDU opens the card afresh
            elif code == CTRL_ATR:
                try:
                    self._send(sock, ATR)
                except OSError:  # vpcd went away meanwhile (or the card is being stopped): as for an APDU answer
                    self.card.end()
                    self._disconnect()
            return
        if not self.card.active and not self.card.begin():
            # Busy in another command (or still away): it is not in this reader's field after all.
            self.card.away_until = max(self.card.away_until, time.monotonic() + 0.2)
            self._disconnect()
            return
        response = self.card.process(payload)
        if response is None:  # torn: the card leaves the reader without answering
            self._disconnect()
            return
        try:
            self._send(sock, response)
        except OSError:
            self.card.end()
            self._disconnect()
