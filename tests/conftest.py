"""Shared fixtures: a fresh home with the shipped merchants.yaml, cards, a terminal context and a mock reader.

Every test starts from the same environment, whatever the shell that runs pytest exported and whatever a test
before it (in the same pytest-xdist worker) left: see ``_own_environment`` and ``_process_state_between_tests``.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from ecny_nfc.mock import Faults, MockReader
from pos.home import Home
from pos.ledger import Ledger
from pos.payment.outcome import Outcome
from pos.payment.session import PaymentSession, TerminalContext
from wallet import clock
from wallet.card import WalletApplet
from wallet.issuance import issue_card
from wallet.limits import OfflineCaps

# No property test may depend on how fast the machine is: hypothesis's per-example deadline is off everywhere.
settings.register_profile("ecny", deadline=None)
settings.load_profile("ecny")

# The variables the terminal and the operator read. None is inherited: the home, the config, the language, the clock,
# the operator and its settings are what each test says, never what a developer's shell happens to have exported.
OUTSIDE_SETTINGS = ("POS_HOME", "POS_CONFIG", "POS_LANG", "POS_NOW", "POS_OPERATOR_URL", "POS_OPERATOR_ADMIN_TOKEN",
                    "ECNY_OPERATOR_FAULT", "ECNY_OPERATOR_SETTINGS", "ECNY_OPERATOR_DB", "ECNY_OPERATOR_PKI",
                    "ECNY_OPERATOR_FEE_BPS")
_default_homes = itertools.count(1)


@pytest.fixture(autouse=True)
def _own_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test sees the caller's settings (nor one a test before it left) or touches the user's data or reader
    locks: the default home (a command without ``--home``) is a fresh directory per test, reader locks live in this
    run's (this worker's) temp dir. Its own MonkeyPatch: a test's ``monkeypatch.undo()`` cannot bring back a value
    removed here."""
    with pytest.MonkeyPatch.context() as env:
        for name in OUTSIDE_SETTINGS:
            env.delenv(name, raising=False)
        base = tmp_path_factory.getbasetemp()
        env.setenv("POS_HOME", str(base / "default-homes" / str(next(_default_homes))))
        env.setenv("ECNY_READER_LOCKS", str(base / "reader-locks"))
        yield


@pytest.fixture(autouse=True)
def _process_state_between_tests() -> Iterator[None]:
    """The process-wide state a test may change is back when it ends: the clock is the wall clock (``clock.use``
    restores it) and the garbage collector runs (a sale holds it off). A test that leaves either otherwise, itself or
    through a thread still running, fails; the next test in this worker starts with them restored."""
    yield
    left: list[str] = []
    if not isinstance(clock.current(), clock.WallClock):
        left.append(f"the process clock on {clock.current()!r}")
        clock.set_clock(clock.WallClock())
    if not gc.isenabled():
        left.append("the garbage collector off")
        gc.enable()
    if left:
        pytest.fail(f"the test left {' and '.join(left)}")


COUNTER = "CMGQ0001"
COUNTER_2 = "CMGQ0002"
MERCHANT = "320508000000101"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def ledger(home: Home) -> Iterator[Ledger]:
    with home.ledger(COUNTER) as led:
        yield led


@pytest.fixture
def ctx(home: Home, ledger: Ledger) -> TerminalContext:
    c = home.context(COUNTER, ledger)
    c.recovery_timeout = 0.2
    return c


class Taps:
    """Tap in-memory cards on one terminal, with faults, and look at the results."""

    def __init__(self, home: Home, ctx: TerminalContext) -> None:
        self.home = home
        self.ctx = ctx
        self._n = 0

    def card(self, tier: int = 4, balance_fen: int = 100_000, caps: OfflineCaps | None = None,
             **kwargs: object) -> WalletApplet:
        self._n += 1
        state = issue_card(self.home.pki, f"c{self._n:04d}", tier, balance_fen, caps or self.ctx.caps, **kwargs)
        return WalletApplet(state)

    def pay(self, card: WalletApplet, amount_fen: int, faults: Faults | None = None, retap: bool = False,
            ctx: TerminalContext | None = None) -> Outcome:
        reader = MockReader()
        reader.present(card, faults)
        if retap:
            reader.present(card)
        return PaymentSession(ctx or self.ctx, reader).pay(amount_fen, timeout=1)


@pytest.fixture
def taps(home: Home, ctx: TerminalContext) -> Taps:
    return Taps(home, ctx)


def payments(ledger: Ledger) -> list:
    return list(ledger.entries(kind="payment"))
