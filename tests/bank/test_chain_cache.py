"""The verifier's chain cache is bounded: it never holds more cards (nor key objects) than its sizes, the least
recently used card goes first, and a card that left it is verified again from its certificates, a card whose key
object left it has its key rebuilt from the cached point, with the same answers as before either way."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bank.auth import TerminalRecord
from bank.chaincache import ChainCache, Window, card_digest
from bank.parse import parse
from bank.verify import VERIFY_CHUNK, Verifier
from wallet.keys import new_key
from wallet.pki import OperatorPki, cert_der
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.batch import UploadItem

TERMINAL = TerminalRecord("CMGQ0001", "320508000000101")
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)  # the tests' instant: no reading of the clock
PKI = OperatorPki.create(now=T0 - dt.timedelta(days=30))  # CAs older than the cards
FOREIGN = OperatorPki.create("Someone Else", now=T0)
ROOTS = (cert_der(PKI.root.cert),)
ISSUER = cert_der(PKI.wallet_ca.cert)
NOW = int(T0.timestamp() * 1000)
DAY = 86_400_000
CARD_VALIDITY = (T0 - dt.timedelta(minutes=5), T0 + dt.timedelta(days=5 * 365))


class Card:
    def __init__(self, n: int, valid: tuple[dt.datetime, dt.datetime] | None = None) -> None:
        self.wallet_id = f"0991{n:012d}"
        self.key = new_key()
        cert = PKI.wallet_ca.issue_wallet_cert(self.wallet_id, 4, self.key.public_key(), *(valid or CARD_VALIDITY))
        self.leaf = cert_der(cert)
        self.counter = 0

    def voucher(self, ts: int = NOW - 60_000, signer: object = None, wallet_id: str | None = None,
                issuer: bytes = ISSUER) -> UploadItem:
        self.counter += 1
        body = VoucherBody(wallet_id or self.wallet_id, self.counter, 100 + self.counter, CNY, TERMINAL.merchant_id,
                           TERMINAL.terminal_id, os.urandom(16), ts, 100_000)
        return UploadItem(Voucher.sign(body, signer or self.key).encode(), self.leaf, issuer)  # type: ignore[arg-type]

    @property
    def digest(self) -> bytes:
        return card_digest(self.leaf, ISSUER)


def judge(verifier: Verifier, items: list[UploadItem]) -> list[str | None]:
    """Each voucher's verdict after verification: None (passed) or the reason it was rejected for."""
    judged = [parse(i, item, TERMINAL) for i, item in enumerate(items)]
    assert all(j.status is None for j in judged)
    verifier.verify_all(judged, items)
    for j, item in zip(judged, items):
        assert (j.status is None) == (j.reason is None)
        if j.status is None:
            assert j.tier == 4 and j.cert_der == item.cert_der
    return [j.reason for j in judged]


def test_the_cache_never_holds_more_than_its_size_and_drops_the_least_recently_used() -> None:
    verifier = Verifier(ROOTS, None, threads=1, chain_cache=4, key_cache=2)
    cards = [Card(i) for i in range(10)]
    for k in range(0, 10, 2):
        pair = cards[k:k + 2]
        assert judge(verifier, [c.voucher() for c in pair for _ in range(2)]) == [None] * 4
        assert len(verifier.chains) <= 4 and verifier.chains.keys_held() <= 2
        if k == 4:  # card 2, seen again, becomes the most recently used: card 3 leaves before it
            assert judge(verifier, [cards[2].voucher()]) == [None]
    assert len(verifier.chains) == 4 and verifier.chains.keys_held() == 2
    assert [c.digest in verifier.chains for c in cards] == [False] * 6 + [True] * 4


def test_an_evicted_card_is_verified_again_and_answers_the_same() -> None:
    verifier = Verifier(ROOTS, None, threads=1, chain_cache=2, key_cache=1)
    card, other = Card(1), Card(2)
    first = [card.voucher(), card.voucher(signer=other.key), card.voucher(wallet_id=other.wallet_id)]
    assert judge(verifier, first) == [None, "bad_signature", "wallet_mismatch"]
    for n in range(3, 6):  # three other cards push it out
        assert judge(verifier, [Card(n).voucher()]) == [None]
    assert card.digest not in verifier.chains
    again = [card.voucher(), card.voucher(signer=other.key), card.voucher(wallet_id=other.wallet_id)]
    assert judge(verifier, again) == [None, "bad_signature", "wallet_mismatch"]
    assert card.digest in verifier.chains
    # from the cache, with the key object kept, then without it: the key rebuilt from the cached point is the
    # card's own, the wallet id the certificate's
    cached = [card.voucher(), card.voucher(signer=other.key), card.voucher(wallet_id=other.wallet_id)]
    assert judge(verifier, cached) == [None, "bad_signature", "wallet_mismatch"]
    assert judge(verifier, [Card(6).voucher()]) == [None]  # takes the one key object
    assert card.digest in verifier.chains
    cached = [card.voucher(), card.voucher(signer=other.key), card.voucher(wallet_id=other.wallet_id)]
    assert judge(verifier, cached) == [None, "bad_signature", "wallet_mismatch"]


def test_a_chain_not_valid_at_the_voucher_time_is_rejected_before_and_after_eviction() -> None:
    now = dt.datetime.fromtimestamp(NOW / 1000, dt.UTC)
    card = Card(7, valid=(now - dt.timedelta(days=10), now - dt.timedelta(days=1)))
    verifier = Verifier(ROOTS, None, threads=1, chain_cache=1, key_cache=0)

    def three() -> list[UploadItem]:  # inside the window, after it, before it
        return [card.voucher(ts=NOW - 5 * DAY), card.voucher(ts=NOW), card.voucher(ts=NOW - 20 * DAY)]

    expected = [None, "expired_certificate", "certificate_not_yet_valid"]
    assert judge(verifier, three()) == expected
    hit = verifier.chains.get(card.digest)
    assert hit is not None and hit[0].not_after < NOW and hit[0].not_before > NOW - 20 * DAY
    assert judge(verifier, three()) == expected  # from the cache
    assert judge(verifier, [Card(8).voucher()]) == [None]
    assert card.digest not in verifier.chains  # evicted
    assert judge(verifier, [card.voucher(ts=NOW), card.voucher(ts=NOW - 20 * DAY)]) == expected[1:]
    assert card.digest not in verifier.chains  # a chain that failed is not cached
    assert judge(verifier, three()) == expected  # re-added by the voucher inside the window
    assert card.digest in verifier.chains


def test_a_cached_leaf_with_another_issuer_is_verified_on_its_own() -> None:
    verifier = Verifier(ROOTS, None, threads=1, chain_cache=8)
    card = Card(9)
    assert judge(verifier, [card.voucher()]) == [None]
    assert judge(verifier, [card.voucher(issuer=cert_der(FOREIGN.wallet_ca.cert))]) == ["unknown_issuer"]
    assert judge(verifier, [card.voucher()]) == [None]


@pytest.mark.parametrize("size", [0, 16])
def test_the_bound_holds_on_the_helper_threads(size: int) -> None:
    verifier = Verifier(ROOTS, None, threads=2, chain_cache=size, key_cache=size // 2)
    try:
        cards = [Card(100 + i) for i in range(2 * VERIFY_CHUNK)]
        items = [c.voucher() for c in cards] + [cards[0].voucher(signer=cards[1].key)]
        assert judge(verifier, items) == [None] * len(cards) + ["bad_signature"]
        assert verifier.pool is not None
        assert len(verifier.chains) == size and verifier.chains.keys_held() == size // 2
        assert judge(verifier, items[:-1]) == [None] * len(cards)  # signatures only: the counters are the same
        assert len(verifier.chains) == size and verifier.chains.keys_held() == size // 2
    finally:
        verifier.close()


def test_chain_cache_order_and_sizes() -> None:
    cache = ChainCache(2, keys=1)
    keys = {d: new_key().public_key() for d in (b"a", b"b", b"c")}
    windows = {d: Window(0, 1, d.decode(), 1, k.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
               for d, k in keys.items()}
    cache.put(b"a", windows[b"a"], keys[b"a"])
    cache.put(b"b", windows[b"b"], keys[b"b"])
    assert cache.keys_held() == 1
    assert cache.get(b"b") == (windows[b"b"], keys[b"b"])
    assert cache.get(b"a") == (windows[b"a"], None)  # a is now the most recently used; its key object had left
    rebuilt = cache.key(b"a", windows[b"a"])  # rebuilt from the point, and kept
    assert rebuilt is not keys[b"a"] and rebuilt == keys[b"a"] and cache.get(b"a") == (windows[b"a"], rebuilt)
    cache.put(b"c", windows[b"c"], keys[b"c"])
    assert len(cache) == 2 and b"b" not in cache and cache.get(b"b") is None
    assert cache.get(b"a") == (windows[b"a"], None) and cache.get(b"c") == (windows[b"c"], keys[b"c"])
    assert cache.keys_held() == 1
    assert ChainCache(1, keys=5).key_size == 1
    with pytest.raises(ValueError):
        ChainCache(-1)
    assert card_digest(b"ab", b"c") != card_digest(b"a", b"bc")
