"""Settlement: re-verification of every voucher, exactly-once under re-upload, double spends, accounts, loads."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from pos.sync.client import OperatorRefused
from tests.support.shop import Shop
from wallet.keys import key_from_pem, new_key
from wallet.voucher import MAX_TIMESTAMP_MS, Voucher

T1, T2, OTHER = "CMGQ0001", "CMGQ0002", "ZZYS0001"
MERCHANT = "320508000000101"


def fp(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def upload(shop: Shop, tid: str, raws: list[bytes], cert: bytes, issuer: bytes) -> list[dict]:
    with shop.client(tid) as c:
        ans = c.settle([{"voucher": r.hex(), "cert": fp(cert), "issuer": fp(issuer)} for r in raws],
                       {fp(cert): cert.hex(), fp(issuer): issuer.hex()})
    return ans["results"]


def paid(shop: Shop, tid: str, card: str, amount: int) -> tuple[bytes, bytes, bytes]:
    """Pay and return (voucher bytes, wallet cert, issuer cert) from the terminal's ledger."""
    out = shop.pay(tid, card, amount)
    with shop.home.ledger(tid) as led:
        e = led.payment(out.voucher_id)
        return bytes.fromhex(e.data["voucher"]), led.certificate(e.data["cert"]), led.certificate(e.data["issuer"])


def account(shop: Shop) -> dict:
    with shop.admin() as a:
        return a.account(MERCHANT)


def test_reupload_settles_each_voucher_once(shop: Shop) -> None:
    (card,) = shop.cards(1)
    vs = [paid(shop, T1, card, 100 * (i + 1)) for i in range(4)]
    cert, issuer = vs[0][1], vs[0][2]
    raws = [v[0] for v in vs]
    first = upload(shop, T1, raws[:2], cert, issuer)
    assert [r["status"] for r in first] == ["settled", "settled"]
    again = upload(shop, T1, raws, cert, issuer)
    assert [r["status"] for r in again] == ["duplicate", "duplicate", "settled", "settled"]
    for _ in range(3):
        assert [r["status"] for r in upload(shop, T1, raws[::-1], cert, issuer)] == ["duplicate"] * 4
    assert account(shop)["settled_fen"] == 100 + 200 + 300 + 400
    result = shop.sync(T1)  # the terminal's own sync: all already settled -> duplicates, recorded once
    assert (result.uploaded, result.settled, result.duplicate, result.pending) == (4, 0, 4, 0)
    assert shop.sync(T1).uploaded == 0
    assert account(shop)["settled_fen"] == 1000


def test_tampered_and_forged_vouchers_rejected(shop: Shop) -> None:
    (card,) = shop.cards(1)
    raw, cert, issuer = paid(shop, T1, card, 500)
    v = Voucher.decode(raw)
    tampered = Voucher(replace(v.body, amount_fen=50_000), v.signature).encode()
    forged = Voucher.sign(replace(v.body, counter=2), new_key()).encode()
    assert [(r["status"], r["reason"]) for r in upload(shop, T1, [tampered, forged], cert, issuer)] == [
        ("rejected", "bad_signature"), ("rejected", "bad_signature")]
    assert account(shop)["settled_fen"] == 0
    # the genuine voucher still settles, and the rejections are answered the same way again
    assert upload(shop, T1, [raw, tampered], cert, issuer)[0]["status"] == "settled"
    assert upload(shop, T1, [tampered], cert, issuer)[0]["reason"] == "bad_signature"
    assert upload(shop, T1, [b"\x70\x01\x00"], cert, issuer)[0]["reason"] == "bad_voucher"
    # signed honestly by the card's key, but dated after the last day the calendar has in China
    state = shop.home.cards.load(card)
    late = Voucher.sign(replace(v.body, counter=3, timestamp_ms=MAX_TIMESTAMP_MS + 1),
                        key_from_pem(state.key_pem.encode())).encode()
    assert upload(shop, T1, [late], cert, issuer)[0]["reason"] == "bad_voucher"


def test_foreign_card_and_wrong_payee_rejected(shop: Shop) -> None:
    (card,) = shop.cards(1)
    raw, cert, issuer = paid(shop, T1, card, 700)
    assert upload(shop, T2, [raw], cert, issuer)[0]["reason"] == "wrong_terminal"  # same merchant, not its voucher
    assert upload(shop, OTHER, [raw], cert, issuer)[0]["reason"] == "wrong_payee"
    # a card from a foreign issuer, signed correctly with its own key: the operator does not know its CA
    state = shop.home.cards.load(shop.cards(1, foreign=True)[0])
    body = replace(Voucher.decode(raw).body, wallet_id=state.wallet_id, counter=1)
    foreign = Voucher.sign(body, key_from_pem(state.key_pem.encode())).encode()
    assert upload(shop, T1, [foreign], state.cert_der, state.issuer_der)[0]["reason"] == "unknown_issuer"
    # a genuine certificate of another wallet presented with the voucher
    other = shop.home.cards.load(shop.cards(1)[0])
    assert upload(shop, T1, [raw], other.cert_der, other.issuer_der)[0]["reason"] == "wallet_mismatch"
    assert account(shop)["settled_fen"] == 0


def test_over_limits_rejected(shop: Shop) -> None:
    (card,) = shop.cards(1)
    raw, cert, issuer = paid(shop, T1, card, 100)
    state = shop.home.cards.load(card)
    key = key_from_pem(state.key_pem.encode())
    body = Voucher.decode(raw).body
    big = Voucher.sign(replace(body, counter=2, amount_fen=2_000_01), key).encode()  # over tier 4 single max
    offline = Voucher.sign(replace(body, counter=3, amount_fen=600_00), key).encode()  # over the offline cap
    res = upload(shop, T1, [big, offline], cert, issuer)
    assert [r["reason"] for r in res] == ["over_single_limit", "over_offline_limit"]


def test_spending_beyond_loaded_is_a_double_spend(shop: Shop) -> None:
    (card,) = shop.cards(1, balance_fen=100_000, register=False)
    state = shop.home.cards.load(card)
    with shop.admin() as a:  # the operator knows of only 10 yuan loaded onto this wallet
        a.register_wallet(state.wallet_id, state.tier, state.cert_der, 1000)
    shop.pay(T1, card, 800)
    shop.pay(T1, card, 300)
    res = shop.sync(T1)
    assert res.settled == 1 and res.rejected == [{"voucher_id": f"{state.wallet_id}-00000002",
                                                  "reason": "double_spend"}]
    assert res.denylist_version == 1
    with shop.admin() as a:
        w = a.wallet(state.wallet_id)
        assert (w["status"], w["spent_fen"], w["revoked_reason"]) == ("revoked", 800, "double_spend")
        with pytest.raises(OperatorRefused) as err:
            a.load_token(state.wallet_id, 100, 0)
        assert err.value.code == "wallet_revoked"


def test_load_tokens_count_as_loaded_and_never_repeat(shop: Shop) -> None:
    from pos.cards.manage import apply_load

    (card,) = shop.cards(1, balance_fen=1000)
    balance, token = apply_load(shop.home, card, amount_fen=5000)
    assert (balance, token.load_counter) == (6000, 1)
    balance, token = apply_load(shop.home, card, amount_fen=100)
    assert (balance, token.load_counter) == (6100, 2)
    with shop.admin() as a:
        w = a.wallet(shop.home.cards.load(card).wallet_id)
        assert (w["loaded_fen"], w["load_counter"]) == (6100, 2)
        t = a.load_token(w["wallet_id"], 100, after_counter=7)  # the card saw counter 7 elsewhere
        assert t["load_counter"] == 8


def test_fee_is_a_per_operator_setting(shop: Shop) -> None:
    shop.operator.operator.fee_bps = 60  # 0.6 %
    (card,) = shop.cards(1)
    shop.pay(T1, card, 12_345)
    shop.sync(T1)
    acc = account(shop)
    assert (acc["settled_fen"], acc["fee_fen"], acc["balance_fen"]) == (12_345, 74, 12_271)
