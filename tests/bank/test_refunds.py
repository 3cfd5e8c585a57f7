"""Refunds: full and partial, never over the original, idempotent, only by the payee merchant, in both reports."""

from __future__ import annotations

import pytest

from pos.sync.client import OperatorRefused
from pos.sync.refunds import RefundRefused, request_refund
from pos.sync.reports import reconcile
from tests.support.shop import Shop
from wallet.errors import InvalidInput

T1, T2, OTHER = "CMGQ0001", "CMGQ0002", "ZZYS0001"


def test_partial_then_full_then_nothing_more(shop: Shop) -> None:
    (card,) = shop.cards(1)
    vid = shop.pay(T1, card, 1000).voucher_id
    # not synced yet: the refund syncs first, then refunds
    r1 = request_refund(shop.home, T1, vid, 300)
    assert (r1["amount_fen"], r1["refunded_total_fen"], r1["remaining_fen"]) == (300, 300, 700)
    with pytest.raises(OperatorRefused) as err:
        request_refund(shop.home, T1, vid, 701)
    assert err.value.status == 409 and err.value.code == "over_refund"
    assert "¥7.01" in str(err.value) and "(¥7.00)" in str(err.value) and "fen" not in str(err.value)
    r2 = request_refund(shop.home, T1, vid)  # the rest
    assert (r2["amount_fen"], r2["remaining_fen"]) == (700, 0)
    with pytest.raises(OperatorRefused):
        request_refund(shop.home, T1, vid, 1)
    with shop.admin() as a:
        acc = a.account("320508000000101")
        assert (acc["settled_fen"], acc["refunded_fen"], acc["balance_fen"]) == (1000, 1000, 0)
        assert a.wallet(shop.home.cards.load(card).wallet_id)["online_fen"] == 1000
    with shop.home.ledger(T1) as led:
        assert [e.amount_fen for e in led.entries(kind="refund")] == [300, 700]
    rep = reconcile(shop.home, T1, r1["day"])
    assert rep["terminal"]["refunds"] == rep["operator"]["refunds"] == {"count": 2, "total_fen": 1000}


def test_refund_replay_returns_the_first_result(shop: Shop) -> None:
    (card,) = shop.cards(1)
    vid = shop.pay(T1, card, 1000).voucher_id
    shop.sync(T1)
    with shop.client(T1) as c:
        first = c.refund(f"{T1}-R-1", vid, 400)
        again = c.refund(f"{T1}-R-1", vid, 400)  # the answer was lost, the terminal asks again
        assert again["replayed"] and again["amount_fen"] == 400 and again["refunded_total_fen"] == 400
        with pytest.raises(OperatorRefused) as err:
            c.refund(f"{T1}-R-1", vid, 500)
        assert err.value.code == "refund_id_reused"
    assert first["refunded_total_fen"] == 400


def test_only_the_payee_merchant_refunds_a_settled_voucher(shop: Shop) -> None:
    (card,) = shop.cards(1)
    vid = shop.pay(T1, card, 1000).voucher_id
    shop.sync(T1)
    with shop.client(OTHER) as c, pytest.raises(OperatorRefused) as err:
        c.refund(f"{OTHER}-X-1", vid, 100)
    assert err.value.code == "wrong_payee"
    with pytest.raises(InvalidInput, match="no payment"):  # T2 never took this payment
        request_refund(shop.home, T2, vid, 100)


def test_rejected_voucher_cannot_be_refunded(shop: Shop) -> None:
    (card,) = shop.cards(1, register=False)
    state = shop.home.cards.load(card)
    with shop.admin() as a:
        a.register_wallet(state.wallet_id, state.tier, state.cert_der, 100)
    vid = shop.pay(T1, card, 500).voucher_id
    with pytest.raises(RefundRefused, match="double_spend"):
        request_refund(shop.home, T1, vid, 100)
