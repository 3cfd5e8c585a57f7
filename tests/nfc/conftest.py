"""Fixtures for the real reader stacks: a terminal with a stored card, nfcpy udp, and a private pcscd with vpcd.

The PC/SC tests run their own pcscd for the session: socket-activated (LISTEN_FDS) on a unix socket in a temporary
directory that the client library finds through PCSCLITE_CSOCK_NAME, with a vpcd reader on free TCP ports. So they
neither need nor disturb a system pcscd (which may hold real readers) and several test runs can go at once. Within
a run on pytest-xdist workers, the tests that use it are one group (see ``pytest_collection_modifyitems``), so only
one worker starts a pcscd.
When pcscd, the vpcd driver or pyscard is missing the PC/SC tests skip with the reason; with
ECNY_REQUIRE_READER_STACKS=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecny_nfc.emulation import EmulatorFaults
from ecny_nfc.iso_dep_card import UdpCardEmulator
from ecny_nfc.pcscd_private import PrivatePcscd, missing_pcsc_stack, private_pcscd
from ecny_nfc.reader import Reader
from ecny_nfc.vpcd_card import VpcdCard
from pos.home import Home
from pos.ledger import Ledger
from pos.payment.outcome import Outcome
from pos.payment.session import PaymentSession, TerminalContext
from wallet.issuance import issue_card

COUNTER = "CMGQ0001"


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


class PcscStack(Stack):
    """pyscard through a private pcscd; the card is a vpcd virtual card in the first slot."""

    name = "pcsc-vpcd"

    def __init__(self, pcscd: PrivatePcscd) -> None:
        self.pcscd = pcscd

    @contextlib.contextmanager
    def present(self, terminal: Terminal, card_id: str, faults: EmulatorFaults | None = None,
                slot: int = 0) -> Iterator[Any]:
        store = terminal.home.cards
        name = self.pcscd.slots[slot]
        self._wait_state(name, present=False)  # pcscd has seen the previous card leave: this insertion is news
        with VpcdCard(lambda: store.open(card_id, timeout=2), "127.0.0.1", self.pcscd.port + slot, faults) as card:
            self._wait_state(name, present=True)
            yield card

    @staticmethod
    def _wait_state(name: str, present: bool, timeout: float = 15.0) -> None:
        from smartcard import scard

        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                hr, states = scard.SCardGetStatusChange(ctx, 0, [(name, scard.SCARD_STATE_UNAWARE)])
                if hr == scard.SCARD_S_SUCCESS and bool(states[0][1] & scard.SCARD_STATE_PRESENT) == present:
                    return
                time.sleep(0.02)
            raise AssertionError(f"pcscd did not see the card {'arrive in' if present else 'leave'} {name}")
        finally:
            scard.SCardReleaseContext(ctx)

    def reader(self, name: str | None = None) -> Reader:
        from ecny_nfc.pcsc_reader import PcscReader

        return PcscReader(self.pcscd.slots[0] if name is None else name)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the private pcscd runs in one xdist worker (``--dist loadgroup``): one pcscd a run."""
    for item in items:
        if "pcscd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("pcscd"))


@pytest.fixture(scope="session")
def pcscd() -> Iterator[PrivatePcscd]:
    """A private pcscd with vpcd for this test session (skip, or fail in CI, when the stack is missing)."""
    missing = missing_pcsc_stack()
    if missing:
        if os.environ.get("ECNY_REQUIRE_READER_STACKS") == "1":
            pytest.fail(f"PC/SC stack required (ECNY_REQUIRE_READER_STACKS=1) but {missing}")
        pytest.skip(missing)
    with private_pcscd() as daemon:
        yield daemon


@pytest.fixture
def udp_stack() -> UdpStack:
    return UdpStack()


@pytest.fixture
def pcsc_stack(pcscd: PrivatePcscd) -> PcscStack:
    return PcscStack(pcscd)
