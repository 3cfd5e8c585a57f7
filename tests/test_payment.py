"""End-to-end payments through the mock reader and the full protocol, and every decline reason."""

from __future__ import annotations

import datetime as dt
import gc
import threading
from dataclasses import replace

import pytest

from ecny_nfc.mock import MockReader
from pos.payment.reasons import Reason
from pos.payment.session import PaymentSession
from tests.conftest import COUNTER, COUNTER_2, MERCHANT, Taps, payments
from wallet.protocol import STATUS_BLOCKED
from wallet.voucher import Voucher


def test_approved_payment_debits_card_and_records_one_verified_voucher(taps: Taps) -> None:
    card = taps.card(balance_fen=100_000)
    out = taps.pay(card, 1230)
    assert out.approved, out
    assert out.reason is None
    assert card.state.balance_fen == 100_000 - 1230
    assert out.balance_after_fen == card.state.balance_fen
    assert card.state.counter == 1
    [entry] = payments(taps.ctx.ledger)
    assert entry.voucher_id == out.voucher_id == f"{card.state.wallet_id}-00000001"
    voucher = Voucher.decode(bytes.fromhex(entry.data["voucher"]))
    assert voucher.body.amount_fen == 1230
    assert voucher.body.merchant_id == MERCHANT
    assert voucher.body.terminal_id == COUNTER
    from cryptography import x509

    voucher.verify(x509.load_der_x509_certificate(card.state.cert_der).public_key())  # raises if not


def test_consecutive_payments_use_consecutive_counters(taps: Taps) -> None:
    card = taps.card()
    ids = [taps.pay(card, 100 + i).voucher_id for i in range(3)]
    assert ids == [f"{card.state.wallet_id}-{n:08d}" for n in (1, 2, 3)]
    assert sum(e.amount_fen for e in payments(taps.ctx.ledger)) == 303


def _decline(taps: Taps, card, amount: int, reason: Reason) -> None:
    before = replace(card.state)
    recorded = len(payments(taps.ctx.ledger))
    out = taps.pay(card, amount)
    assert out.status == "declined"
    assert out.reason is reason, out
    assert out.message("en") and out.message("zh-CN") != out.message("en")
    assert card.state.balance_fen == before.balance_fen
    assert card.state.counter == before.counter
    assert len(payments(taps.ctx.ledger)) == recorded


def test_insufficient_balance(taps: Taps) -> None:
    _decline(taps, taps.card(balance_fen=500), 501, Reason.INSUFFICIENT_BALANCE)


def test_over_single_limit_tier4(taps: Taps) -> None:
    taps.ctx.caps = replace(taps.ctx.caps, single_max=10**9, cumulative_max=10**9)
    from wallet.limits import OfflineCaps

    card = taps.card(tier=4, balance_fen=1_000_000, caps=OfflineCaps(10**9, 10**9, 100))
    _decline(taps, card, 200_001, Reason.OVER_SINGLE_LIMIT)


def test_over_daily_limit_tier4(taps: Taps) -> None:
    from wallet.limits import OfflineCaps

    taps.ctx.caps = OfflineCaps(10**9, 10**9, 100)
    card = taps.card(tier=4, balance_fen=1_000_000, caps=OfflineCaps(10**9, 10**9, 100))
    for _ in range(2):
        assert taps.pay(card, 200_000).approved
    _decline(taps, card, 100_001, Reason.OVER_DAILY_LIMIT)
    assert taps.pay(card, 100_000).approved  # exactly at the daily cap of 5,000 yuan


def test_over_offline_single_cap(taps: Taps) -> None:
    _decline(taps, taps.card(), 50_001, Reason.OVER_OFFLINE_LIMIT)


def test_over_offline_count_cap(taps: Taps) -> None:
    card = taps.card()
    for _ in range(10):
        assert taps.pay(card, 100).approved
    _decline(taps, card, 100, Reason.OVER_OFFLINE_LIMIT)


def test_expired_certificate(taps: Taps) -> None:
    _decline(taps, taps.card(expired=True), 100, Reason.EXPIRED_CERTIFICATE)


def test_unknown_issuer(taps: Taps, home) -> None:
    from wallet.card import WalletApplet
    from wallet.issuance import issue_card

    card = WalletApplet(issue_card(home.foreign_pki(), "c0900", 4, 10_000))
    _decline(taps, card, 100, Reason.UNKNOWN_ISSUER)


def test_denylisted(taps: Taps) -> None:
    card = taps.card()
    taps.ctx.ledger.apply_denylist(1, [card.state.wallet_id])
    _decline(taps, card, 100, Reason.DENYLISTED)
    assert taps.ctx.ledger.denylist_version() == 1


def test_blocked_card(taps: Taps) -> None:
    card = taps.card()
    card.state = replace(card.state, status=STATUS_BLOCKED)
    _decline(taps, card, 100, Reason.CARD_BLOCKED)


def test_card_removed_before_pay_is_certainly_not_paid(taps: Taps) -> None:
    from ecny_nfc.mock import Faults

    card = taps.card()
    out = taps.pay(card, 100, Faults(tear_after=2))
    assert out.reason is Reason.CARD_REMOVED
    assert not out.pending_recovery
    assert "not charged" in out.message("en")
    assert card.state.counter == 0


def test_not_a_wallet(taps: Taps) -> None:
    class OtherApplet:
        def reset(self) -> None: ...

        def process(self, apdu: bytes) -> bytes:
            return b"\x6a\x82"

    reader = MockReader()
    reader.present(OtherApplet())
    out = PaymentSession(taps.ctx, reader).pay(100, timeout=1)
    assert out.reason is Reason.NOT_A_WALLET


def test_no_card_and_cancel(taps: Taps) -> None:
    import threading

    out = PaymentSession(taps.ctx, MockReader()).pay(100, timeout=0.05)
    assert out.reason is Reason.NO_CARD
    cancel = threading.Event()
    cancel.set()
    out = PaymentSession(taps.ctx, MockReader()).pay(100, timeout=5, cancel=cancel)
    assert out.reason is Reason.CANCELLED


def test_multiple_cards_in_field(taps: Taps) -> None:
    reader = MockReader()
    a, b = taps.card(), taps.card()
    reader.present_together(a, b)
    out = PaymentSession(taps.ctx, reader).pay(100, timeout=1)
    assert out.reason is Reason.MULTIPLE_CARDS
    assert a.state.counter == b.state.counter == 0


def test_clone_replaying_a_counter_at_the_same_terminal(taps: Taps) -> None:
    card = taps.card()
    clone_state = replace(card.state, card_id="c0999")
    assert taps.pay(card, 100).approved
    from wallet.card import WalletApplet

    out = taps.pay(WalletApplet(clone_state), 100)
    assert out.reason is Reason.REPLAYED_COUNTER
    assert len(payments(taps.ctx.ledger)) == 1


def test_terminal_clock_before_certificate_validity(taps: Taps) -> None:
    card = taps.card()
    taps.ctx.now_ms = lambda: int(dt.datetime(2001, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)  # type: ignore
    _decline(taps, card, 100, Reason.CERTIFICATE_NOT_YET_VALID)


def test_card_decline_status_maps_to_reason_and_voids_intent(taps: Taps) -> None:
    """The card enforces its own limits even when the terminal's copy would allow the payment."""
    card = taps.card()
    card.state = replace(card.state, offline_single_max=50_000)
    ledger = taps.ctx.ledger
    # The terminal thinks the card allows more: lie in the info the card reports by lowering caps afterwards.
    original_process = card.process

    def process(apdu: bytes) -> bytes:
        if apdu[1] == 0x50:
            card.state = replace(card.state, balance_fen=50)
        return original_process(apdu)

    card.process = process  # type: ignore[method-assign]
    out = taps.pay(card, 100)
    assert out.reason is Reason.INSUFFICIENT_BALANCE
    assert [e.kind for e in ledger.entries()] == ["intent", "void"]
    assert ledger.open_intents() == []


@pytest.mark.parametrize("amount", [0, -1])
def test_session_refuses_non_positive_amounts(taps: Taps, amount: int) -> None:
    with pytest.raises(ValueError):
        taps.pay(taps.card(), amount)


def test_recording_a_voucher_twice_keeps_one_entry_and_a_different_body_is_refused(taps: Taps) -> None:
    """The unique voucher id decides: the same voucher again is the same payment; another body is a replay."""
    from pos.payment.outcome import Declined
    from wallet.keys import key_from_pem
    from wallet.voucher import CNY, VoucherBody

    card = taps.card()
    assert taps.pay(card, 100).approved
    [entry] = payments(taps.ctx.ledger)
    voucher = Voucher.decode(bytes.fromhex(entry.data["voucher"]))
    session = PaymentSession(taps.ctx, MockReader())
    again = session._record(voucher, entry.data["intent"], card.state.cert_der, card.state.issuer_der)
    assert again.seq == entry.seq and len(payments(taps.ctx.ledger)) == 1
    other = Voucher.sign(VoucherBody(card.state.wallet_id, 1, 999, CNY, MERCHANT, COUNTER, b"\x07" * 16,
                                     voucher.body.timestamp_ms, 0), key_from_pem(card.state.key_pem.encode()))
    with pytest.raises(Declined) as exc:
        session._record(other, entry.data["intent"], card.state.cert_der, card.state.issuer_der)
    assert exc.value.reason is Reason.REPLAYED_COUNTER
    assert len(payments(taps.ctx.ledger)) == 1
    taps.ctx.ledger.verify()


def test_garbage_collection_waits_during_a_tap_and_resumes_after_it(taps: Taps) -> None:
    seen: list[bool] = []
    taps.ctx.after_pay = lambda: seen.append(gc.isenabled())
    assert gc.isenabled()
    assert taps.pay(taps.card(), 100).approved
    assert seen == [False] and gc.isenabled()
    assert taps.pay(taps.card(balance_fen=10), 100).reason == Reason.INSUFFICIENT_BALANCE  # a decline path
    assert gc.isenabled()
    gc.disable()  # a process that turned collection off keeps it off
    try:
        assert taps.pay(taps.card(), 100).approved
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_garbage_collection_resumes_only_when_the_last_concurrent_tap_is_decided(taps: Taps, home) -> None:
    in_tap, release = threading.Event(), threading.Event()
    ctx_a = replace(taps.ctx, after_pay=lambda: (in_tap.set(), release.wait(5)))
    with home.ledger(COUNTER_2) as ledger_b:
        ctx_b = home.context(COUNTER_2, ledger_b)
        result: list[bool] = []
        a = threading.Thread(target=lambda: result.append(taps.pay(taps.card(), 100, ctx=ctx_a).approved))
        a.start()
        assert in_tap.wait(5)
        assert taps.pay(taps.card(), 100, ctx=ctx_b).approved
        assert not gc.isenabled()  # the first tap is still being decided
        release.set()
        a.join(5)
    assert result == [True] and gc.isenabled()


@pytest.mark.parametrize("cut_at", [0xA4, 0xCA, 0x50])
def test_an_answer_cut_short_is_a_decline_or_a_recovery_never_an_exception(taps: Taps, cut_at: int) -> None:
    """A one-byte answer (no status word) to SELECT, READ INFO or PAY: the tap is decided like any damaged answer,
    and a PAY that went through is read back and recorded once."""
    card = taps.card()

    class CutShort:
        def __init__(self) -> None:
            self.cut = True

        def reset(self) -> None:
            card.reset()

        def process(self, apdu: bytes) -> bytes:
            out = card.process(apdu)
            if self.cut and apdu[1] == cut_at:
                self.cut = False
                return out[:1]
            return out

    out = taps.pay(CutShort(), 700)  # type: ignore[arg-type]
    if cut_at == 0x50:
        assert out.approved and card.state.balance_fen == 100_000 - 700
        assert [e.amount_fen for e in payments(taps.ctx.ledger)] == [700]
    else:
        assert out.reason is Reason.CARD_ERROR and card.state.balance_fen == 100_000
        assert payments(taps.ctx.ledger) == []
    taps.ctx.ledger.verify()
