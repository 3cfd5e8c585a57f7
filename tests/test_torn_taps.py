"""Torn taps: the card pulled away at every APDU step. Money is conserved, never recorded twice."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecny_nfc.mock import Faults, MockReader
from pos.payment.reasons import Reason
from pos.payment.session import PaymentSession
from tests.conftest import Taps, payments
from wallet.card import WalletApplet

APDUS_IN_A_PAYMENT = 5  # SELECT, READ INFO (without the issuer certificate the terminal holds), 2 x GET RESPONSE, PAY


def _count_apdus(taps: Taps) -> int:
    card = taps.card()
    reader = MockReader()
    seen: list[bytes] = []
    reader.observe(lambda c, r: seen.append(c))
    reader.present(card)
    assert PaymentSession(taps.ctx, reader).pay(100, timeout=1).approved
    return len(seen)


def test_payment_apdu_count_is_what_the_property_test_covers(taps: Taps) -> None:
    assert _count_apdus(taps) == APDUS_IN_A_PAYMENT


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tear=st.integers(min_value=0, max_value=APDUS_IN_A_PAYMENT), retap=st.booleans(),
       amount=st.integers(min_value=1, max_value=50_000))
def test_tear_at_any_step_conserves_money(taps: Taps, tear: int, retap: bool, amount: int) -> None:
    card = taps.card(balance_fen=100_000)
    ledger = taps.ctx.ledger
    start = card.state.balance_fen
    before_payments = {e.voucher_id for e in payments(ledger)}

    out = taps.pay(card, amount, Faults(tear_after=tear), retap=retap)
    new = [e for e in payments(ledger) if e.voucher_id not in before_payments]
    charged = start - card.state.balance_fen

    assert charged in (0, amount)
    if out.approved:
        assert [e.amount_fen for e in new] == [amount] and charged == amount
        assert out.voucher_id == new[0].voucher_id
    else:
        assert out.reason is Reason.CARD_REMOVED
        assert new == []
        # Either certainly not charged, or held for recovery.
        assert out.pending_recovery == (charged == amount)
        # The next tap of the same card (any amount) recovers the held payment exactly once.
        follow = taps.pay(card, 1)
        assert follow.approved
        recovered = [e for e in payments(ledger) if e.voucher_id not in before_payments]
        assert sum(e.amount_fen for e in recovered) == start - card.state.balance_fen
        assert len({e.voucher_id for e in recovered}) == len(recovered)
        assert follow.recovered == ([new_id for new_id in [f"{card.state.wallet_id}-00000001"]]
                                    if charged else [])
    assert ledger.open_intents(card.state.wallet_id) == []
    ledger.verify()


def test_torn_pay_recovered_on_retap_in_the_same_session(taps: Taps) -> None:
    card = taps.card()
    out = taps.pay(card, 777, Faults(tear_after=APDUS_IN_A_PAYMENT), retap=True)
    assert out.approved
    assert out.voucher_id == f"{card.state.wallet_id}-00000001"
    assert card.state.balance_fen == 100_000 - 777
    kinds = [e.kind for e in taps.ctx.ledger.entries()]
    assert kinds == ["intent", "torn", "payment"]


def test_torn_pay_without_retap_is_pending_and_recovered_later(taps: Taps) -> None:
    card = taps.card()
    out = taps.pay(card, 500, Faults(tear_after=APDUS_IN_A_PAYMENT))
    assert out.reason is Reason.CARD_REMOVED and out.pending_recovery
    assert "may have been charged" in out.message("en")
    assert len(taps.ctx.ledger.open_intents()) == 1
    later = taps.pay(card, 200)
    assert later.approved
    assert later.recovered == [f"{card.state.wallet_id}-00000001"]
    assert [e.amount_fen for e in payments(taps.ctx.ledger)] == [500, 200]


def test_terminal_crash_after_pay_is_recovered_from_the_intent(taps: Taps, home) -> None:
    """The terminal dies after sending PAY: a new session (new process) recovers from the durable intent."""
    card = taps.card()
    ledger = taps.ctx.ledger

    class Crash(Exception):
        pass

    original = card.process

    def dying(apdu: bytes) -> bytes:
        response = original(apdu)
        if apdu[1] == 0x50:
            raise Crash  # the terminal never sees the answer
        return response

    card.process = dying  # type: ignore[method-assign]
    with pytest.raises(Crash):
        taps.pay(card, 300)
    card.process = original  # type: ignore[method-assign]
    assert payments(ledger) == [] and card.state.counter == 1
    # "Restart": a fresh ledger connection and a fresh session.
    with home.ledger("CMGQ0001") as ledger2:
        ctx2 = replace(taps.ctx, ledger=ledger2)
        out = taps.pay(card, 100, ctx=ctx2)
        assert out.approved and out.recovered == [f"{card.state.wallet_id}-00000001"]
        assert sum(e.amount_fen for e in ledger2.entries(kind="payment")) == 400


def test_other_wallet_on_retap_does_not_resolve_the_torn_one(taps: Taps) -> None:
    card, other = taps.card(), taps.card()
    reader = MockReader()
    reader.present(card, Faults(tear_after=APDUS_IN_A_PAYMENT))
    reader.present(other)
    out = PaymentSession(taps.ctx, reader).pay(100, timeout=1)
    assert out.reason is Reason.CARD_REMOVED and out.pending_recovery
    assert other.state.counter == 0
    assert taps.pay(card, 1).recovered == [f"{card.state.wallet_id}-00000001"]


def test_intent_voided_when_card_paid_elsewhere_since(taps: Taps) -> None:
    """A torn PAY that never reached the card, then the card pays at another terminal: the intent is voided."""
    card = taps.card()
    out = taps.pay(card, 100, Faults(tear_after=APDUS_IN_A_PAYMENT - 1))
    assert out.reason is Reason.CARD_REMOVED
    # Tear before PAY: nothing pending.
    assert taps.ctx.ledger.open_intents() == []
    assert card.state.counter == 0


def test_corrupted_voucher_in_transit_is_reread(taps: Taps) -> None:
    card = taps.card()
    out = taps.pay(card, 250, Faults(corrupt_response=APDUS_IN_A_PAYMENT))
    assert out.approved
    assert len(payments(taps.ctx.ledger)) == 1
    assert any("GET LAST" in t.meaning for t in out.trace)


def test_clone_card_is_a_card_with_the_same_keys(taps: Taps) -> None:
    card = taps.card()
    clone = WalletApplet(replace(card.state, card_id="c0777"))
    assert taps.pay(clone, 100).approved
    assert taps.pay(card, 100).reason is Reason.REPLAYED_COUNTER


def test_reader_failure_mid_pay_is_held_for_recovery_not_lost(taps: Taps) -> None:
    """A reader that dies mid-PAY (unplugged): the decline says so and the payment is recovered on the next tap."""
    from ecny_nfc.reader import ReaderError

    card = taps.card()

    class DyingConnection:
        uid = b"\x01"

        def __init__(self) -> None:
            self.n = 0

        def transceive(self, apdu: bytes) -> bytes:
            response = card.process(apdu)
            if apdu[1] == 0x50:
                raise ReaderError("USB device unplugged")
            return response

        def is_present(self) -> bool:
            return True

        def release(self) -> None: ...

    class DyingReader:
        name = "dying"
        calls = 0

        def connect(self, timeout=None, cancel=None):
            self.calls += 1
            if self.calls > 1:
                raise ReaderError("reader is gone")
            card.reset()
            return DyingConnection()

        def close(self) -> None: ...

    out = PaymentSession(taps.ctx, DyingReader()).pay(100, timeout=1)
    assert out.reason is Reason.TERMINAL_ERROR and out.pending_recovery
    assert card.state.counter == 1 and payments(taps.ctx.ledger) == []
    assert taps.pay(card, 1).recovered == [f"{card.state.wallet_id}-00000001"]


def test_power_loss_after_pay_then_paid_elsewhere_is_recovered_by_the_next_process(tmp_path, capsys) -> None:
    """The terminal process dies right after the card answers PAY (os._exit: no cleanup); the customer then pays at
    another terminal. The card's transaction log still holds the first voucher: the next tap of that card at the
    first terminal recovers it exactly once, and the ledgers hold every fen the card paid."""
    import json
    import os
    import subprocess
    import sys

    from pos.cli.main import main

    env = {**os.environ, "POS_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        """The CLI in this process (the dying payment alone needs a process of its own)."""
        capsys.readouterr()
        code = main(["--home", str(tmp_path), *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    def ledger(terminal: str, wallet_id: str) -> list[int]:
        out = json.loads(run("ledger", "list", "--terminal", terminal, "--kind", "payment", "--json").stdout)
        return sorted(e["amount_fen"] for e in out["entries"] if e["wallet_id"] == wallet_id)

    run("card", "issue", "--tier", "4", "--balance", "100", "--count", "2")
    died = subprocess.run([sys.executable, "-m", "pos.cli.main", "pay", "--terminal", "CMGQ0001", "--card", "c0001",
                           "--amount", "20", "--power-loss", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert died.returncode == 137 and died.stdout == ""
    elsewhere = json.loads(run("pay", "--terminal", "CMGQ0002", "--card", "c0001", "--amount", "5", "--json").stdout)
    assert elsewhere["status"] == "approved"
    card = json.loads(run("card", "show", "c0001", "--json").stdout)
    assert card["balance_fen"] == 7_500 and card["counter"] == 2  # paid twice; the first terminal recorded nothing
    # Another wallet taps first: it cannot answer the orphan (whose pay-sent mark names c0001): no extra APDU.
    other = json.loads(run("pay", "--terminal", "CMGQ0001", "--card", "c0002", "--amount", "1", "--json",
                           "--trace").stdout)
    assert other["status"] == "approved" and other["recovered"] == []
    assert len(other["trace"]) == APDUS_IN_A_PAYMENT
    back = json.loads(run("pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "2", "--json",
                          "--trace").stdout)
    assert back["status"] == "approved"
    assert back["recovered"] == [card["wallet_id"] + "-00000001"]
    assert [t["meaning"].split(":")[0] for t in back["trace"]][-2:] == ["RECOVER", "PAY"]
    assert ledger("CMGQ0001", card["wallet_id"]) == [200, 2_000]
    assert ledger("CMGQ0002", card["wallet_id"]) == [500]  # with CMGQ0001's ¥20: the ¥25 the card had paid
    assert run("ledger", "verify", "--terminal", "CMGQ0001").returncode == 0
    # Tapping again recovers nothing twice.
    again = json.loads(run("pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1", "--json").stdout)
    assert again["recovered"] == []


def test_charge_without_a_card_leaves_nothing_open(taps: Taps) -> None:
    out = PaymentSession(taps.ctx, MockReader()).pay(100, timeout=0.01)
    assert out.reason is Reason.NO_CARD
    assert [e.kind for e in taps.ctx.ledger.entries()] == ["intent", "void"]
    assert taps.ctx.ledger.open_intents() == []
    taps.ctx.ledger.verify()


def test_pay_lost_on_the_air_then_paid_elsewhere_then_retapped(taps: Taps, home) -> None:
    """PAY never reaches the card (lost on the air); the customer pays at another terminal, then taps here again in
    the same charge. The card's counter matches the torn record but its last voucher answers another challenge:
    this charge pays afresh, once, and nothing is left open."""
    from ecny_nfc.reader import CardRemoved

    card = taps.card()

    class LosePay:
        uid = b"\x01"

        def transceive(self, apdu: bytes) -> bytes:
            if apdu[1] == 0x50:
                raise CardRemoved("PAY lost on the air")
            return card.process(apdu)

        def is_present(self) -> bool:
            return True

        def release(self) -> None: ...

    class Reader:
        name = "scripted"

        def __init__(self) -> None:
            self.n = 0

        def connect(self, timeout=None, cancel=None):
            self.n += 1
            card.reset()
            if self.n == 1:
                return LosePay()
            # Between the two taps the customer paid at the other counter.
            with home.ledger("CMGQ0002") as other_ledger:
                other = home.context("CMGQ0002", other_ledger)
                assert taps.pay(card, 50, ctx=other).approved
            card.reset()
            reader = MockReader()
            reader.present(card)
            return reader.connect(timeout=1)

        def close(self) -> None: ...

    out = PaymentSession(taps.ctx, Reader()).pay(300, timeout=1)
    assert out.approved and out.torn
    assert out.voucher_id == f"{card.state.wallet_id}-00000002"
    assert card.state.balance_fen == 100_000 - 50 - 300
    assert [e.amount_fen for e in payments(taps.ctx.ledger)] == [300]
    assert taps.ctx.ledger.open_intents() == []
    taps.ctx.ledger.verify()


def test_a_charge_retried_after_a_tear_that_paid_is_settled_by_that_payment(taps: Taps) -> None:
    """The wallet left mid-PAY (held for recovery) and the clerk charges the same amount again: the tap reads the
    earlier payment back, and that payment settles the retry. The customer pays once; no second PAY is sent."""
    taps.ctx.recovery_timeout = 0
    card = taps.card(balance_fen=100_000)
    first = taps.pay(card, 4_990, Faults(tear_at=0x50))
    assert not first.approved and first.pending_recovery
    retry = taps.pay(card, 4_990)
    assert retry.approved and retry.recovered == [retry.voucher_id]
    assert [t.meaning.split(":")[0] for t in retry.trace][-1] == "RECOVER"  # no PAY in this tap
    assert card.state.balance_fen == 100_000 - 4_990 and retry.balance_after_fen == card.state.balance_fen
    assert [e.amount_fen for e in payments(taps.ctx.ledger)] == [4_990]
    assert taps.ctx.ledger.open_intents() == []
    taps.ctx.ledger.verify()


def test_a_different_amount_after_a_tear_is_a_new_charge_and_shows_the_recovered_one(taps: Taps) -> None:
    taps.ctx.recovery_timeout = 0
    card = taps.card(balance_fen=100_000)
    assert taps.pay(card, 4_990, Faults(tear_at=0x50)).pending_recovery
    other = taps.pay(card, 1_000)
    assert other.approved and len(other.recovered) == 1 and other.voucher_id not in other.recovered
    assert sorted(e.amount_fen for e in payments(taps.ctx.ledger)) == [1_000, 4_990]
    assert card.state.balance_fen == 100_000 - 5_990
