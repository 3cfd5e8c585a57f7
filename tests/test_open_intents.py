"""Open intents at a tap: one RECOVER asks the card's transaction log about all of them; abandoned charges that never
sent PAY are closed void (the pay-sent mark rule, pos/payment/pay_marks.py); a payment the ledger could not write
is held for recovery, never lost."""

from __future__ import annotations

import secrets
import sqlite3

import pytest

from ecny_nfc.mock import MockReader
from pos.ledger import Ledger
from pos.payment.pay_marks import PayMark, marks_dir, read_marks, write_mark
from pos.payment.process import BOOT_ID
from pos.payment.reasons import Reason
from pos.payment.recovery import SWEEP_EVERY
from pos.payment.session import PaymentSession
from tests.conftest import Taps, payments
from wallet.card import WalletApplet

PLAIN_TAP = 5  # SELECT, READ INFO, 2 x GET RESPONSE, PAY
DEAD = f"{2**22 + 7}:1"  # a pid above any pid_max: its process is gone
DEAD_THIS_BOOT = f"{DEAD}@{BOOT_ID}"
DEAD_OTHER_BOOT = f"{DEAD}@00000000-0000-0000-0000-000000000000"


def _orphan(ledger: Ledger, amount_fen: int, owner: str) -> tuple[int, bytes]:
    challenge = secrets.token_bytes(16)
    entry = ledger.append("intent", amount_fen=amount_fen, data={"challenge": challenge.hex(), "owner": owner})
    return entry.seq, challenge


def _crash_after_pay(taps: Taps, card: WalletApplet, amount_fen: int) -> None:
    """The terminal dies after sending PAY (the card paid, the answer never arrives): an orphan with its mark."""

    class Crash(Exception):
        pass

    original = card.process

    def dying(apdu: bytes) -> bytes:
        response = original(apdu)
        if apdu[1] == 0x50:
            raise Crash
        return response

    card.process = dying  # type: ignore[method-assign]
    with pytest.raises(Crash):
        taps.pay(card, amount_fen)
    card.process = original  # type: ignore[method-assign]


def _names(out) -> list[str]:
    return [t.meaning.split(":")[0] for t in out.trace]


def test_forty_open_intents_cost_one_apdu_and_the_paid_one_is_recovered(taps: Taps) -> None:
    ledger = taps.ctx.ledger
    card = taps.card()
    _crash_after_pay(taps, card, 300)
    for _ in range(39):  # charges of processes from before boot ids were recorded: undecidable, asked of every card
        _orphan(ledger, 100, DEAD)
    assert len(ledger.open_intents()) == 40
    out = taps.pay(card, 100)
    assert out.approved and out.recovered == [f"{card.state.wallet_id}-00000001"]
    assert _names(out) == ["SELECT", "READ INFO", "GET RESPONSE", "GET RESPONSE", "RECOVER", "PAY"]
    assert len(out.trace) == PLAIN_TAP + 1  # with GET LAST TRANSACTION per intent it was 44
    assert len(ledger.open_intents()) == 39
    other = taps.pay(taps.card(), 100)  # a card that paid none of them: still one APDU to learn that
    assert other.approved and other.recovered == [] and len(other.trace) == PLAIN_TAP + 1
    assert sorted(e.amount_fen for e in payments(ledger)) == [100, 100, 300]
    ledger.verify()


def test_a_charge_whose_process_died_before_pay_is_voided_at_the_next_tap(taps: Taps) -> None:
    """No pay-sent mark and a process of this boot: no PAY was ever sent, whichever card comes next."""
    ledger = taps.ctx.ledger
    seqs = [_orphan(ledger, 100, DEAD_THIS_BOOT)[0] for _ in range(39)]
    out = taps.pay(taps.card(), 250)
    assert out.approved and len(out.trace) == PLAIN_TAP  # nothing left to ask the card
    voids = {e.data["intent"]: e for e in ledger.entries(kind="void")}
    assert set(seqs) <= set(voids) and "no PAY was sent" in voids[seqs[0]].data["proof"]
    assert ledger.open_intents() == []
    ledger.verify()


def test_without_a_mark_a_charge_of_another_boot_stays_open_until_seven_days(taps: Taps) -> None:
    """After an operating-system crash a mark written without fsync may be lost: no void on its absence."""
    ledger = taps.ctx.ledger
    seq, _ = _orphan(ledger, 100, DEAD_OTHER_BOOT)
    assert taps.pay(taps.card(), 100).approved
    assert [i.seq for i in ledger.open_intents()] == [seq]
    real = taps.ctx.now_ms
    taps.ctx.now_ms = lambda: real() + 8 * 86_400_000  # type: ignore[method-assign]
    assert taps.pay(taps.card(), 100).approved
    assert ledger.open_intents() == []
    assert [e.data["intent"] for e in ledger.entries(kind="unresolved")] == [seq]


@pytest.mark.parametrize("paid_elsewhere", [False, True])
def test_a_marked_charge_that_never_reached_the_card_is_voided_by_its_log(taps: Taps, home,
                                                                           paid_elsewhere: bool) -> None:
    """Killed between leaving the mark and sending PAY: the wallet's counter never reached the mark's counter, or
    the card's payment with that counter (in its log) answers another challenge."""
    ledger = taps.ctx.ledger
    card = taps.card()
    seq, challenge = _orphan(ledger, 300, DEAD_THIS_BOOT)
    write_mark(ledger.path, PayMark(seq, challenge, card.state.wallet_id, card.state.counter + 1))
    assert taps.pay(taps.card(), 100).approved  # another wallet: it cannot decide this one
    assert [i.seq for i in ledger.open_intents()] == [seq]
    if paid_elsewhere:
        with home.ledger("CMGQ0002") as other_ledger:
            assert taps.pay(card, 50, ctx=home.context("CMGQ0002", other_ledger)).approved
    out = taps.pay(card, 100)
    assert out.approved and out.recovered == []
    void = [e for e in ledger.entries(kind="void") if e.data["intent"] == seq]
    assert len(void) == 1 and ("another challenge" if paid_elsewhere else "never reached") in void[0].data["proof"]
    assert ledger.open_intents() == []
    assert card.state.balance_fen == 100_000 - 100 - (50 if paid_elsewhere else 0)


def test_a_payment_past_the_cards_log_is_unresolved_not_guessed(taps: Taps, home) -> None:
    card = taps.card()
    card.state = card.state.evolve(log_depth=2)  # the depth is the card's own setting, kept with its state
    _crash_after_pay(taps, card, 300)  # counter 1, unrecorded here
    with home.ledger("CMGQ0002") as other_ledger:
        other = home.context("CMGQ0002", other_ledger)
        for _ in range(2):
            assert taps.pay(card, 10, ctx=other).approved  # the log now holds counters 2 and 3 only
    out = taps.pay(card, 100)
    assert out.approved and out.recovered == []
    [entry] = taps.ctx.ledger.entries(kind="unresolved")
    assert "starts at counter 2" in entry.data["problem"] and entry.counter == 1


def test_a_payment_the_ledger_could_not_write_is_pending_and_recovered(taps: Taps, monkeypatch) -> None:
    """Disk full after PAY: the card paid and keeps the voucher in its log; the result says so (pending_recovery,
    never approved, never 'not charged'), and the card's next tap records it."""
    card = taps.card()
    real_append = Ledger._append
    full = {"on": True}

    def append(self, kind, **fields):
        if kind == "payment" and full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_append(self, kind, **fields)

    monkeypatch.setattr(Ledger, "_append", append)
    out = taps.pay(card, 700)
    assert not out.approved and out.reason is Reason.TERMINAL_ERROR and out.pending_recovery
    assert out.wallet_id == card.state.wallet_id and "could not be written" in out.detail
    assert card.state.balance_fen == 100_000 - 700 and payments(taps.ctx.ledger) == []
    full["on"] = False
    back = taps.pay(card, 100)
    assert back.approved and back.recovered == [f"{card.state.wallet_id}-00000001"]
    assert sorted(e.amount_fen for e in payments(taps.ctx.ledger)) == [100, 700]
    assert taps.ctx.ledger.open_intents() == []


def test_no_pay_is_sent_when_the_mark_cannot_be_left(taps: Taps) -> None:
    marks_dir(taps.ctx.ledger.path).write_text("not a directory")
    card = taps.card()
    out = PaymentSession(taps.ctx, _reader(card)).pay(100, timeout=1)
    assert out.reason is Reason.TERMINAL_ERROR and not out.pending_recovery
    assert card.state.counter == 0 and "PAY" not in _names(out)
    assert taps.ctx.ledger.open_intents() == []


def _reader(card: WalletApplet) -> MockReader:
    reader = MockReader()
    reader.present(card)
    return reader


def test_the_marks_of_plain_charges_are_swept_as_they_go(taps: Taps) -> None:
    """Every plain charge writes two entries (intent, payment), so its intent's seq keeps one parity: the sweep
    still comes round, and the marks of closed charges do not pile up beside the ledger."""
    for _ in range(3 * SWEEP_EVERY):
        assert taps.pay(taps.card(), 100).approved
    assert 0 < len(read_marks(taps.ctx.ledger.path)) <= SWEEP_EVERY
