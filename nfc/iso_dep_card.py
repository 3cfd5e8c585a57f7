"""The wallet card as an ISO 14443-4 Type 4A target on nfcpy's udp radio (``udp:HOST:PORT``).

A terminal opened with ``--reader udp:HOST:PORT`` taps it through nfcpy's unmodified reader stack: the udp driver
polls (SENS_REQ), runs anticollision and select, nfcpy's Type4ATag sends RATS and speaks the ISO-DEP block protocol.
This side answers like a contactless card: SENS_RES/SDD_RES/SEL_RES (SAK 0x20, ISO-DEP), an ATS carrying TA, TB
(frame waiting time, which nfcpy reads from TB) and TC, I-blocks with chaining both ways, R(ACK)/R(NAK) with
retransmission, S(DESELECT), and S(WTX) while an APDU takes longer than a fraction of the frame waiting time.
A new poll (REQA/WUPA) or RF off always means a fresh activation, so a reader killed mid-tap never wedges the card.

The emulator speaks the udp driver's datagram format (``"106A <hex>"``, ``"RFOFF"``) on one socket that stays bound
for its whole life. nfcpy's own ``ContactlessFrontend.listen`` closes and re-binds its socket for every
activation, and a poll that arrives in between is lost (the reader then waits a full second); keeping one socket
avoids that, while the reader side stays exactly nfcpy's.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import reduce

from ecny_nfc.emulation import CardSource, EmulatedCard, EmulatorFaults
from ecny_nfc.reader import ReaderError

BRTY = b"106A"
SENS_RES = bytes([0x04, 0x00])  # bit frame anticollision, single-size UID
SAK_ISO_DEP = 0x20
FWI = 8  # frame waiting time 4096/fc * 2**8 = 77 ms: nfcpy waits this long (plus retries) for each answer
FWT = 4096 / 13.56e6 * 2**FWI
FSCI = 8  # the card accepts frames of 256 bytes
ATS = bytes([0x05, 0x70 | FSCI, 0x00, (FWI << 4) | 0x00, 0x00])  # TL T0 TA TB TC
WTXM = 4  # each S(WTX) asks for 4 x FWT
WTX_FIRST = FWT / 4  # an APDU still busy after this long gets an S(WTX)
WTX_AGAIN = WTXM * FWT / 2
SESSION_IDLE = 5.0  # an activated card with a silent reader for this long is let go (store unlocked)


class EmulatorError(ReaderError):
    """The card emulator could not start; the message says what to do."""


def _bcc(uid: bytes) -> int:
    return reduce(lambda a, b: a ^ b, uid, 0)


def parse_udp_path(path: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` (or ``HOST:PORT``) as (host, port)."""
    parts = path.split(":")
    if parts and parts[0] == "udp":
        parts = parts[1:]
    if len(parts) != 2 or not parts[1].isdigit():
        raise EmulatorError(f"{path!r} is not udp:HOST:PORT (e.g. udp:127.0.0.1:54321)")
    return parts[0] or "localhost", int(parts[1])


class UdpCardEmulator:
    """A wallet card in the field of nfcpy udp readers that send to ``host:port``.

    ``serve(stop)`` runs until ``stop`` is set (or :meth:`close`); :meth:`start` runs it in a daemon thread.
    """

    _last_rx: float  # monotonic time of the last datagram; set by _reset_link, read by serve

    def __init__(self, source: CardSource | None, host: str = "127.0.0.1", port: int = 0,
                 faults: EmulatorFaults | None = None, uid: bytes = b"\x08\x45\x43\x4e",
                 card: EmulatedCard | None = None) -> None:
        if len(uid) != 4:
            raise ValueError("uid must be 4 bytes")
        if card is None:
            if source is None:
                raise ValueError("give a card source or an EmulatedCard")
            card = EmulatedCard(source, faults)
        self.card = card
        self.uid = uid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise EmulatorError(f"udp port {port} on {host} is in use: another card is there, or pick "
                                    "another port") from None
            raise EmulatorError(f"cannot listen on udp {host}:{port}: {exc}") from None
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="card-apdu")
        self._reset_link()

    @property
    def path(self) -> str:
        """The reader path that reaches this card."""
        return f"udp:{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> UdpCardEmulator:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve, name=f"card-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, take the card out of the field (its store is unlocked) and free the port."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.card.end()
        self._worker.shutdown(wait=True)
        self.sock.close()

    def __enter__(self) -> UdpCardEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve(self, stop: threading.Event | None = None) -> None:
        """Answer the radio until ``stop`` (or :meth:`close`)."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            wait = 0.1
            try:
                self.sock.settimeout(wait)
                datagram, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                if self.card.active and time.monotonic() - self._last_rx > SESSION_IDLE:
                    self._deactivate()
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            self._last_rx = time.monotonic()
            self._on_datagram(datagram, addr)
        self._deactivate()

    # -- the radio --------------------------------------------------------------------------------------------------
    def _reset_link(self) -> None:
        self._state = "idle"  # idle -> ready (SENS_RES sent) -> selected (SEL_RES sent) -> protocol (ATS sent)
        self._addr: tuple[str, int] | None = None
        self._chain_in = b""
        self._chain_out: list[bytes] = []
        self._last_block: bytes | None = None
        self._last_bn = 1  # the card's block number starts at 1 after activation
        self._last_rx = time.monotonic()

    def _deactivate(self) -> None:
        self.card.end()
        self._reset_link()

    def _send(self, frame: bytes, addr: tuple[str, int] | None = None) -> None:
        target = addr or self._addr
        if target is None:
            return
        with contextlib.suppress(OSError):
            self.sock.sendto(BRTY + b" " + binascii.hexlify(frame), target)

    def _on_datagram(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if datagram.startswith(b"RFOFF"):
            self._deactivate()
            return
        try:
            brty, hexdata = datagram.split()
            frame = binascii.unhexlify(hexdata)
        except ValueError:
            return
        if brty != BRTY or not frame:
            return
        if self.card.is_away():
            self._reset_link()
            return
        if frame in (b"\x26", b"\x52"):  # REQA / WUPA: always a fresh activation
            self._deactivate()
            if self.card.begin():
                self._state, self._addr = "ready", addr
                self._send(SENS_RES)
            return
        if addr != self._addr:
            return
        if self._state == "ready":
            self._anticollision(frame)
        elif self._state == "selected" and frame[0] == 0xE0:  # RATS
            self._state = "protocol"
            self._send(ATS)
        elif self._state == "protocol":
            self._block(frame)

    def _anticollision(self, frame: bytes) -> None:
        uid_bcc = self.uid + bytes([_bcc(self.uid)])
        if frame == b"\x93\x20":
            self._send(uid_bcc)
        elif frame == b"\x93\x70" + uid_bcc:
            self._state = "selected"
            self._send(bytes([SAK_ISO_DEP]))
        elif frame[:2] == b"\x50\x00":  # HLTA
            self._deactivate()

    # -- ISO 14443-4 ------------------------------------------------------------------------------------------------
    def _send_block(self, block: bytes) -> None:
        self._last_block = block
        self._last_bn = block[0] & 1
        self._send(block)

    def _block(self, frame: bytes) -> None:
        pcb = frame[0]
        if pcb & 0xE2 == 0x02:  # I-block
            bn = pcb & 1
            if pcb & 0x10:  # the reader chains a long command: acknowledge and collect
                self._chain_in += frame[1:]
                self._send_block(bytes([0xA2 | bn]))
                return
            apdu, self._chain_in = self._chain_in + frame[1:], b""
            self._chain_out = []
            response = self._run(apdu)
            if response is None:  # torn: the card left the field without answering
                self._reset_link()
                return
            size = 256 - 3  # FSD 256 from RATS (nfcpy sends E0 80), less PCB and CRC
            chunks = [response[i:i + size] for i in range(0, len(response), size)] or [b""]
            self._chain_out = chunks[1:]
            self._send_block(bytes([0x02 | bn | (0x10 if self._chain_out else 0)]) + chunks[0])
        elif pcb & 0xF6 == 0xA2:  # R(ACK)
            bn = pcb & 1
            if bn == self._last_bn and self._last_block is not None:
                self._send(self._last_block)
            elif self._chain_out:
                chunk = self._chain_out.pop(0)
                self._send_block(bytes([0x02 | bn | (0x10 if self._chain_out else 0)]) + chunk)
        elif pcb & 0xF6 == 0xB2:  # R(NAK): retransmit, or acknowledge (also the reader's presence check)
            bn = pcb & 1
            if bn == self._last_bn and self._last_block is not None:
                self._send(self._last_block)
            else:
                self._send(bytes([0xA2 | self._last_bn]))
        elif pcb & 0xF7 == 0xC2:  # S(DESELECT)
            self._send(bytes([0xC2]))
            self._deactivate()

    def _run(self, apdu: bytes) -> bytes | None:
        """Process an APDU on the worker; keep the reader waiting with S(WTX) while it is busy."""
        future: Future[bytes | None] = self._worker.submit(self.card.process, apdu)
        wait = WTX_FIRST
        while True:
            try:
                return future.result(timeout=wait)
            except FutureTimeout:
                pass
            if self._stop.is_set():
                return future.result()
            self._send(bytes([0xF2, WTXM]))
            if not self._await_wtx_response(future, WTXM * FWT):
                future.result()  # the reader switched the field off: the APDU completes, nobody hears it
                self._deactivate()
                return None
            wait = WTX_AGAIN

    def _await_wtx_response(self, future: Future[bytes | None], timeout: float) -> bool:
        """Wait for the reader's S(WTX) answer; False if it switched the field off meanwhile."""
        deadline = time.monotonic() + timeout
        while not future.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                self.sock.settimeout(min(remaining, 0.05))
                datagram, _ = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return False
            if datagram.startswith(b"RFOFF"):
                return False
            parts = datagram.split()
            if len(parts) == 2 and parts[1][:2].upper() == b"F2":
                return True
        return True
