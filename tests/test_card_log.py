"""The card's transaction log: bounded, persisted with its state, read with RECOVER (one APDU for any number of
challenges, no false negatives) and GET LAST TRANSACTION."""

from __future__ import annotations

import json
import random
import secrets
import time

from hypothesis import given
from hypothesis import strategies as st

from wallet.apdu import CommandApdu, ResponseApdu
from wallet.card import LOG_DEPTH, CardState, WalletApplet
from wallet.issuance import issue_card
from wallet.pki import OperatorPki
from wallet.protocol import AID, FILTER_MAX_BYTES, PayRequest, Recovered, filter_admits, log_filter
from wallet.voucher import CNY, Voucher

PKI = OperatorPki.create()


def _card(depth: int = LOG_DEPTH) -> WalletApplet:
    state = issue_card(PKI, "c0001", 4, 100_000).evolve(offline_single_max=10_000, offline_cumulative_max=10**6,
                                                        offline_count_max=100, log_depth=depth)
    card = WalletApplet(state)
    assert card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID, le=256).to_bytes())[-2:] == b"\x90\x00"
    return card


def _pay(card: WalletApplet, amount: int = 100) -> bytes:
    challenge = secrets.token_bytes(16)
    req = PayRequest(amount, CNY, "320508000000101", "CMGQ0001", challenge, time.time_ns() // 10**6)
    assert ResponseApdu.parse(card.process(CommandApdu(0x80, 0x50, data=req.encode(), le=256).to_bytes())).ok
    return challenge


def _recover(card: WalletApplet, challenges: list[bytes]) -> Recovered:
    k, flt = log_filter(challenges)
    resp = ResponseApdu.parse(card.process(CommandApdu(0x80, 0x56, k, 0, flt, le=256).to_bytes()))
    assert resp.ok, hex(resp.sw)
    return Recovered.decode(resp.data)


def test_the_log_keeps_the_last_payments_and_recover_finds_any_of_them() -> None:
    card = _card(depth=3)
    challenges = [_pay(card) for _ in range(5)]
    assert [Voucher.decode(v).body.counter for _, v in card.state.log] == [3, 4, 5]
    answer = _recover(card, [challenges[1], challenges[3], secrets.token_bytes(16)])
    assert answer.log_first == 3
    assert [Voucher.decode(v).body.challenge for v in answer.vouchers] == [challenges[3]]  # 1 left the log
    assert _recover(card, [secrets.token_bytes(16) for _ in range(40)]).vouchers == ()


def test_the_log_is_persisted_with_the_card_and_a_card_from_before_logs_loads() -> None:
    card = _card()
    challenges = [_pay(card) for _ in range(2)]
    again = CardState.from_json(json.loads(json.dumps(card.state.to_json())))
    assert again == card.state and len(again.log) == 2
    legacy = card.state.to_json()
    del legacy["log"], legacy["log_depth"]
    legacy["last_voucher"], legacy["last_challenge"] = card.state.log[-1][1].hex(), challenges[-1].hex()
    old = CardState.from_json(legacy)
    assert old.log == card.state.log[-1:] and old.log_depth == LOG_DEPTH


def test_get_last_transaction_still_answers_the_newest_payment() -> None:
    card = _card()
    first, second = _pay(card), _pay(card)
    assert card.process(CommandApdu(0x80, 0x52, data=second, le=256).to_bytes())[-2:] == b"\x90\x00"
    assert card.process(CommandApdu(0x80, 0x52, data=first, le=256).to_bytes())[-2:] == b"\x6a\x88"


def test_recover_p1_out_of_range_is_wrong_p1p2() -> None:
    card = _card()
    for p1 in (0, 9):
        assert card.process(CommandApdu(0x80, 0x56, p1, 0, b"\xff", le=256).to_bytes())[-2:] == b"\x6b\x00"


@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=400, unique=True))
def test_the_filter_fits_one_apdu_and_admits_every_challenge_it_was_built_from(challenges: list[bytes]) -> None:
    k, flt = log_filter(challenges)
    assert 1 <= k <= 8 and 1 <= len(flt) <= FILTER_MAX_BYTES
    assert all(filter_admits(flt, k, c) for c in challenges)


def test_the_filter_rarely_admits_a_stranger() -> None:
    rng = random.Random(7)  # fixed: the same draws every run
    k, flt = log_filter([rng.randbytes(16) for _ in range(40)])
    strangers = sum(filter_admits(flt, k, rng.randbytes(16)) for _ in range(20_000))
    assert strangers <= 5  # about 6 in a million expected
