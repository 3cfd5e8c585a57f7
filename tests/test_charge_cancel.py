"""Cancel means cancel: before PAY a cancel stops the tap within one APDU and charges nothing (the intent closes
void); after PAY the charge completes. A torn tap waits for the same wallet until one deadline, the one the screen
shows; a clerk who gives up leaves the payment to the next tap of that wallet, which names the amount it recovered.

No test waits on the wall clock for a premise: cards block on events at the APDU the test picks, and the clock the
deadline is computed on is injected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ecny_nfc.mock import Faults, MockReader
from pos.ledger import Ledger
from pos.payment import control as stages
from pos.payment.control import ChargeControl
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from pos.payment.session import PaymentSession, TerminalContext
from tests.conftest import Taps
from wallet.card import WalletApplet
from wallet.protocol import INS_PAY, INS_READ_INFO

HANG_GUARD = 20.0  # a test that reaches this has failed: nothing here should take more than a fraction of it


class HeldCard:
    """A card that stops at the first command with instruction ``ins`` until the test releases it.

    ``before``: it stops before processing that command (the command is on its way: for PAY, sent); otherwise
    after processing it, before its answer goes back."""

    def __init__(self, card: WalletApplet, ins: int, before: bool = False) -> None:
        self.card = card
        self.ins = ins
        self.before = before
        self.connected = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.seen: list[int] = []

    def reset(self) -> None:
        self.connected.set()
        self.card.reset()

    def process(self, apdu: bytes) -> bytes:
        self.seen.append(apdu[1])
        hold = apdu[1] == self.ins and not self.held.is_set()
        if hold and self.before:
            self._hold()
        answer = self.card.process(apdu)
        if hold and not self.before:
            self._hold()
        return answer

    def _hold(self) -> None:
        self.held.set()
        assert self.release.wait(HANG_GUARD)


class Charge:
    """A session's pay() on a thread, with its control."""

    def __init__(self, ctx: TerminalContext, reader: MockReader, amount_fen: int, timeout: float = HANG_GUARD,
                 control: ChargeControl | None = None) -> None:
        self.control = control or ChargeControl()
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, args=(ctx, reader, amount_fen, timeout), daemon=True)
        self.thread.start()

    def _run(self, ctx: TerminalContext, reader: MockReader, amount_fen: int, timeout: float) -> None:
        self.outcome = PaymentSession(ctx, reader).pay(amount_fen, timeout=timeout, cancel=self.control)

    def result(self) -> Outcome:
        self.thread.join(HANG_GUARD)
        assert self.outcome is not None, "the charge did not finish"
        return self.outcome


@pytest.fixture
def card(taps: Taps) -> Iterator[WalletApplet]:
    yield taps.card(balance_fen=10_000)


def kinds(ledger: Ledger) -> list[str]:
    return [e.kind for e in ledger.entries()]


def test_a_slow_card_is_cancelled_at_once_before_pay(ctx: TerminalContext, ledger: Ledger,
                                                     card: WalletApplet) -> None:
    """The mock's slow delay waits on the cancel: a card taking a minute per APDU is let go at once."""
    reader = MockReader()
    held = HeldCard(card, ins=-1)  # never holds: only tells when the reader picked the card up
    reader.present(held, Faults(delay=3600))
    charge = Charge(ctx, reader, 400)
    assert held.connected.wait(HANG_GUARD)
    assert charge.control.request_cancel()  # no PAY under way: the cancel takes effect
    out = charge.result()
    assert out.reason is Reason.CANCELLED
    assert held.seen == []  # the command the delay held never reached the card
    assert (card.state.balance_fen, card.state.counter) == (10_000, 0)
    assert kinds(ledger) == ["intent", "void"] and ledger.open_intents() == []
    assert all(t.response is not None for t in out.trace)  # no phantom exchange in the trace


def test_cancel_is_checked_before_every_command(ctx: TerminalContext, ledger: Ledger, card: WalletApplet) -> None:
    """A cancel that comes while the card works on READ INFO stops the tap before the next command."""
    reader = MockReader()
    held = HeldCard(card, INS_READ_INFO)
    reader.present(held)
    charge = Charge(ctx, reader, 400)
    assert held.held.wait(HANG_GUARD)
    assert charge.control.request_cancel()
    held.release.set()
    out = charge.result()
    assert out.reason is Reason.CANCELLED
    assert held.seen[-1] == INS_READ_INFO and INS_PAY not in held.seen
    assert (card.state.balance_fen, card.state.counter) == (10_000, 0)
    assert kinds(ledger) == ["intent", "void"]


def test_a_cancel_after_pay_is_sent_lets_the_payment_complete(ctx: TerminalContext, ledger: Ledger,
                                                             card: WalletApplet) -> None:
    reader = MockReader()
    held = HeldCard(card, INS_PAY, before=True)
    reader.present(held)
    charge = Charge(ctx, reader, 400)
    assert held.held.wait(HANG_GUARD)
    assert charge.control.paying and charge.control.stage == stages.PAYING
    assert not charge.control.request_cancel()  # too late: the screen says the payment is completing
    held.release.set()
    out = charge.result()
    assert out.approved, out
    assert (card.state.balance_fen, card.state.counter) == (10_000 - 400, 1)
    assert kinds(ledger) == ["intent", "payment"]


def test_during_pay_the_control_reads_as_not_cancelled() -> None:
    """What a reader sees during PAY: not set, and a slow card's wait is not cut short by the clerk's cancel."""
    control = ChargeControl()
    control.begin_pay()
    assert not control.request_cancel()
    assert not control.is_set() and control.wait(0.001) is False
    control.end_pay()
    assert control.is_set() and control.wait(0) is True
    with pytest.raises(Exception, match="cancelled"):
        control.begin_pay()


def test_torn_wait_has_one_deadline_and_a_clerk_can_give_up(ctx: TerminalContext, ledger: Ledger, taps: Taps,
                                                            card: WalletApplet) -> None:
    """After a tear the session waits for the same wallet until ``recovery_timeout`` after the tear, on the
    control's clock (the number the screen counts down). The clerk gives up: the wallet was charged, the payment
    is held, and the next tap of that wallet records it once and names its amount."""
    ctx.recovery_timeout = 45.0
    reader = MockReader()
    reader.present(card, Faults(tear_at=INS_PAY))
    charge = Charge(ctx, reader, 2000, control=ChargeControl(clock=lambda: 500.0))
    control = charge.control
    while charge.thread.is_alive() and control.stage != stages.RETAP:
        threading.Event().wait(0.005)
    assert control.stage == stages.RETAP
    assert control.deadline == 545.0 and control.seconds_left() == 45.0
    assert control.request_cancel()  # waiting for a card: giving up takes effect
    out = charge.result()
    assert out.reason is Reason.CARD_REMOVED and out.pending_recovery and out.torn
    assert "stopped waiting" in out.detail
    assert card.state.balance_fen == 10_000 - 2000  # the card paid before it left
    assert kinds(ledger) == ["intent", "torn"] and len(ledger.open_intents()) == 1

    later = taps.pay(card, 300)
    assert later.approved and later.recovered == [f"{card.state.wallet_id}-00000001"]
    assert later.recovered_fen == [2000]
    answer = later.to_json("en")
    assert answer["recovered_fen"] == [2000]
    assert answer["recovery"] == "recovered ¥20.00 from an earlier torn tap"
    assert later.recovery_note("zh-CN") == "已补记此前中断碰卡的 ¥20.00"
    assert card.state.balance_fen == 10_000 - 2300 and ledger.open_intents() == []
