"""Fixtures for the real reader stacks: a terminal with a stored card, nfcpy udp, and a private pcscd with vpcd.

The PC/SC tests run their own pcscd for the session: socket-activated (LISTEN_FDS) on a unix socket in a temporary
directory that the client library finds through PCSCLITE_CSOCK_NAME, with a vpcd reader on free TCP ports. So they
neither need nor disturb a system pcscd (which may hold real readers) and several test runs can go at once.
When pcscd, the vpcd driver or pyscard is missing the PC/SC tests skip with the reason; with
ECNY_REQUIRE_READER_STACKS=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecny_nfc.emulation import EmulatorFaults
from ecny_nfc.iso_dep_card import UdpCardEmulator
from ecny_nfc.reader import Reader
from ecny_nfc.vpcd_card import VpcdCard
from pos.home import Home
from pos.ledger import Ledger
from pos.session import Outcome, PaymentSession, TerminalContext
from wallet.issuance import issue_card

COUNTER = "CMGQ0001"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


@dataclass
class Terminal:
    """A terminal with its ledger, and the card store the emulated cards live in."""

    home: Home
    ledger: Ledger
    ctx: TerminalContext

    def issue(self, balance_fen: int = 100_000, tier: int = 4) -> str:
        store = self.home.cards
        with store.allocating():
            state = issue_card(self.home.pki, store.new_id(), tier, balance_fen, self.ctx.caps)
            store.add(state)
        return state.card_id

    def balance(self, card_id: str) -> int:
        return self.home.cards.load(card_id).balance_fen

    def pay(self, reader: Reader, amount_fen: int, timeout: float = 5.0) -> Outcome:
        return PaymentSession(self.ctx, reader).pay(amount_fen, timeout=timeout)

    def payments(self) -> list[Any]:
        return list(self.ledger.entries(kind="payment"))


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    home = Home(tmp_path / "home")
    with home.ledger(COUNTER) as ledger:
        ctx = home.context(COUNTER, ledger)
        ctx.recovery_timeout = 5.0
        yield Terminal(home, ledger, ctx)


@pytest.fixture(autouse=True)
def _private_reader_locks(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader locks in a per-session directory, so parallel test runs never see each other's readers as busy."""
    monkeypatch.setenv("ECNY_READER_LOCKS", str(tmp_path_factory.getbasetemp() / "reader-locks"))


class Stack:
    """A real reader stack with a way to put a stored card in its field."""

    name = ""

    def present(self, terminal: Terminal, card_id: str,
                faults: EmulatorFaults | None = None) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def reader(self) -> Reader:
        raise NotImplementedError


class UdpStack(Stack):
    """nfcpy's ContactlessFrontend on ``udp:127.0.0.1:PORT`` with the ISO-DEP card emulator on a free port."""

    name = "nfcpy-udp"

    def __init__(self) -> None:
        self.path: str | None = None

    @contextlib.contextmanager
    def present(self, terminal: Terminal, card_id: str, faults: EmulatorFaults | None = None) -> Iterator[Any]:
        store = terminal.home.cards
        with UdpCardEmulator(lambda: store.open(card_id, timeout=2), "127.0.0.1", 0, faults) as emulator:
            self.path = emulator.path
            yield emulator

    def reader(self) -> Reader:
        from ecny_nfc.nfcpy_reader import NfcpyReader

        assert self.path is not None, "present a card first: its emulator picks the port"
        return NfcpyReader(self.path)


@dataclass
class Pcscd:
    """A private pcscd with one vpcd reader (two slots)."""

    socket_path: Path
    port: int
    slots: tuple[str, str] = ("Virtual PCD 00 00", "Virtual PCD 00 01")


class PcscStack(Stack):
    """pyscard through a private pcscd; the card is a vpcd virtual card in the first slot."""

    name = "pcsc-vpcd"

    def __init__(self, pcscd: Pcscd) -> None:
        self.pcscd = pcscd

    @contextlib.contextmanager
    def present(self, terminal: Terminal, card_id: str, faults: EmulatorFaults | None = None,
                slot: int = 0) -> Iterator[Any]:
        store = terminal.home.cards
        with VpcdCard(lambda: store.open(card_id, timeout=2), "127.0.0.1", self.pcscd.port + slot, faults) as card:
            yield card

    def reader(self, name: str | None = None) -> Reader:
        from ecny_nfc.pcsc_reader import PcscReader

        return PcscReader(self.pcscd.slots[0] if name is None else name)


def _missing_pcsc() -> str | None:
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        return "pcscd is not installed (run scripts/setup as root: apt-get install pcscd vsmartcard-vpcd)"
    if not VPCD_DRIVER.exists():
        return "the vpcd driver is not installed (run scripts/setup as root: apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        return f"pyscard is not importable ({exc}): run scripts/setup"
    return None


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two free consecutive TCP ports")


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    """Start a private pcscd with vpcd for this test session (skip, or fail in CI, when the stack is missing)."""
    missing = _missing_pcsc()
    if missing:
        if os.environ.get("ECNY_REQUIRE_READER_STACKS") == "1":
            pytest.fail(f"PC/SC stack required (ECNY_REQUIRE_READER_STACKS=1) but {missing}")
        pytest.skip(missing)
    workdir = Path(tempfile.mkdtemp(prefix="ecny-pcscd-"))
    confdir = workdir / "reader.conf.d"
    confdir.mkdir()
    port = _free_port_pair()
    (confdir / "vpcd").write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{port}\n'
                                  f"LIBPATH {VPCD_DRIVER}\nCHANNELID {port}\n")
    sock_path = workdir / "pcscd.comm"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(64)
    fd = listener.fileno()
    pcscd_bin = shutil.which("pcscd") or "/usr/sbin/pcscd"
    log = open(workdir / "pcscd.log", "wb")  # noqa: SIM115
    # Socket activation: pcscd serves the socket passed as fd 3 and leaves the system's /run/pcscd/pcscd.comm alone.
    proc = subprocess.Popen(["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --foreground -c "$1" 3<&{fd}',
                             pcscd_bin, str(confdir)], pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(sock_path)
    try:
        _wait_for_vpcd(proc, port, workdir)
        yield Pcscd(sock_path, port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        listener.close()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_vpcd(proc: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
    from smartcard import scard

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pcscd exited: {(workdir / 'pcscd.log').read_text(errors='replace')[-2000:]}")
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr == scard.SCARD_S_SUCCESS:
            hr, names = scard.SCardListReaders(ctx, [])
            scard.SCardReleaseContext(ctx)
            if hr == scard.SCARD_S_SUCCESS and len(names) >= 2:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pcscd's vpcd reader (port {port}) did not come up within 15 s")


@pytest.fixture
def udp_stack() -> UdpStack:
    return UdpStack()


@pytest.fixture
def pcsc_stack(pcscd: Pcscd) -> PcscStack:
    return PcscStack(pcscd)
