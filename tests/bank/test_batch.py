"""The binary settlement batch: round trip, strict decoding (fuzzed), and the HTTP endpoint taking it like JSON."""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pos.sync.client import OperatorBadInput, OperatorRefused
from tests.support.shop import Shop
from wire import signing
from wire.batch import CONTENT_TYPE, MAX_BATCH, MAX_CERT_BYTES, MAX_VOUCHER_BYTES, decode_batch, encode_batch
from wire.errors import BadRequest

T1 = "CMGQ0001"
MERCHANT = "320508000000101"

ders = st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[bytes, int, int]]]:
    certs = draw(ders)
    index = st.integers(0, len(certs) - 1)
    vouchers = draw(st.lists(st.tuples(st.binary(min_size=1, max_size=80), index, index), max_size=6))
    return certs, vouchers


@given(batches())
def test_round_trip(batch: tuple[list[bytes], list[tuple[bytes, int, int]]]) -> None:
    certs, vouchers = batch
    items = decode_batch(encode_batch(certs, vouchers))
    assert [(i.voucher, i.cert_der, i.issuer_der) for i in items] == [(v, certs[c], certs[s]) for v, c, s in vouchers]


@settings(max_examples=300)
@given(batches(), st.data())
def test_mutated_bodies_decode_or_refuse_cleanly(batch: tuple[list[bytes], list[tuple[bytes, int, int]]],
                                                 data: st.DataObject) -> None:
    body = bytearray(encode_batch(*batch))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "extend"]))
        if action == "flip" and body:
            body[data.draw(st.integers(0, len(body) - 1))] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[data.draw(st.integers(0, len(body))):]
        else:
            body += data.draw(st.binary(min_size=1, max_size=8))
    try:
        items = decode_batch(bytes(body))
    except BadRequest as exc:
        assert str(exc).startswith("settlement batch:")
        return
    # accepted: every byte is accounted for (magic, counts, lengths, indexes and values; nothing left over)
    certs = {d for i in items for d in (i.cert_der, i.issuer_der)}
    assert len(body) >= 8 + sum(6 + len(i.voucher) for i in items) + sum(2 + len(d) for d in certs)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "magic"),
    (b'{"vouchers":[],"certificates":{}}', "magic"),
    (b"ECB1", "cut off"),
    (b"ECB1\x00\x00", "cut off"),
    (b"ECB1\x00\x00\x00\x00\x00", "after the last voucher"),
    (b"ECB1\x00\x01\x00\x00", "bad length 0"),
    (b"ECB1\x00\x01\x00\x05abc", "bad length 5"),
    (b"ECB1" + struct.pack(">H", 2 * MAX_BATCH + 1), "certificates, at most"),
    (b"ECB1\x00\x00" + struct.pack(">H", MAX_BATCH + 1), "vouchers, at most"),
    (b"ECB1\x00\x01\x00\x01c\x00\x01\x00\x00\x00\x01\x00\x01v", "index out of range"),
    (b"ECB1\x00\x01\x00\x01c\x00\x01\x00\x00\x00\x00\x00\x02v", "bad length 2"),
    (b"ECB1\x00\x01" + struct.pack(">H", MAX_CERT_BYTES + 1) + b"c" * (MAX_CERT_BYTES + 1), "bad length"),
])
def test_malformed_batches_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_batch(body)


def test_encoder_refuses_what_the_decoder_would() -> None:
    for certs, vouchers in [([b""], []), ([b"c"], [(b"", 0, 0)]), ([b"c"], [(b"v", 0, 1)]),
                            ([b"c"], [(b"v" * (MAX_VOUCHER_BYTES + 1), 0, 0)]),
                            ([b"c"], [(b"v", 0, 0)] * (MAX_BATCH + 1))]:
        with pytest.raises(ValueError):
            encode_batch(certs, vouchers)


# -- over HTTP -----------------------------------------------------------------------------------------------------
def _paid(shop: Shop, n: int) -> tuple[list[bytes], bytes, bytes]:
    (card,) = shop.cards(1)
    raws = []
    for i in range(n):
        out = shop.pay(T1, card, 100 + i)
        with shop.home.ledger(T1) as led:
            e = led.payment(out.voucher_id)
            raws.append(bytes.fromhex(e.data["voucher"]))
            cert, issuer = led.certificate(e.data["cert"]), led.certificate(e.data["issuer"])
    return raws, cert, issuer


def _post(shop: Shop, key, body: bytes, content_type: str = CONTENT_TYPE) -> httpx.Response:
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", body)
    headers["content-type"] = content_type
    return httpx.post(shop.url + "/v1/settlements", content=body, headers=headers, timeout=30)


def _settled(shop: Shop) -> int:
    with shop.admin() as adm:
        return adm.account(MERCHANT)["settled_fen"]


def test_binary_batch_settles_like_json_and_once(shop: Shop) -> None:
    raws, cert, issuer = _paid(shop, 3)
    body = encode_batch([cert, issuer], [(r, 0, 1) for r in raws])
    with shop.client(T1) as c:
        first = c.settle_batch(body)
        fp = {d: hashlib.sha256(d).hexdigest() for d in (cert, issuer)}
        again = c.settle([{"voucher": r.hex(), "cert": fp[cert], "issuer": fp[issuer]} for r in raws],
                         {fp[d]: d.hex() for d in (cert, issuer)})
        third = c.settle_batch(body)
    assert [r["status"] for r in first["results"]] == ["settled"] * 3
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 3
    assert third["results"] == again["results"]
    assert _settled(shop) == 100 + 101 + 102


def test_binary_batch_errors_are_typed_and_change_nothing(shop: Shop) -> None:
    raws, cert, issuer = _paid(shop, 2)
    good = encode_batch([cert, issuer], [(r, 0, 1) for r in raws])
    with shop.client(T1) as c:
        key = c.key
        with pytest.raises(OperatorBadInput) as err:
            c.settle_batch(good[:-1])  # cut off
        assert err.value.status == 400 and "settlement batch" in str(err.value)
        with pytest.raises(OperatorBadInput):
            c.settle_batch(good + b"\x00")  # trailing byte
    r = _post(shop, key, good, "application/xml")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = _post(shop, key, good, "application/json")  # the binary body under the JSON type: malformed, not misread
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    first = _post(shop, key, good)
    assert first.status_code == 200 and [x["status"] for x in first.json()["results"]] == ["settled"] * 2
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", good)
    headers["content-type"] = CONTENT_TYPE
    flipped = bytearray(good)
    flipped[-1] ^= 1
    r = httpx.post(shop.url + "/v1/settlements", content=bytes(flipped), headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_request_signature"
    replay = httpx.post(shop.url + "/v1/settlements", content=good, headers=first.request.headers)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed_request"
    assert _settled(shop) == 100 + 101


def test_replay_racing_its_original_settles_once(shop: Shop) -> None:
    """The nonce of a settlement is recorded with its batch: copies of one signed request sent at once get one
    answer and replay refusals, and the vouchers settle once."""
    raws, cert, issuer = _paid(shop, 4)
    body = encode_batch([cert, issuer], [(r, 0, 1) for r in raws])
    with shop.client(T1) as c:
        key = c.key
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", body)
    headers["content-type"] = CONTENT_TYPE
    with ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda _: httpx.post(shop.url + "/v1/settlements", content=body, headers=headers,
                                                   timeout=30), range(4)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 401, 401, 401]
    assert all(r.json()["error"]["code"] == "replayed_request" for r in answers if r.status_code == 401)
    ok = next(r for r in answers if r.status_code == 200)
    assert [x["status"] for x in ok.json()["results"]] == ["settled"] * 4
    assert _settled(shop) == 100 + 101 + 102 + 103


def test_refused_body_changes_nothing_not_even_the_nonce(shop: Shop) -> None:
    """A well-signed settlement whose body is refused changes nothing (its nonce is recorded only with a batch), so
    sending it again gets the same refusal; an unknown content type is a typed 415."""
    with shop.client(T1) as c:
        key = c.key
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", b"ECB1")
    headers["content-type"] = CONTENT_TYPE
    for _ in range(2):
        r = httpx.post(shop.url + "/v1/settlements", content=b"ECB1", headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    with pytest.raises(OperatorRefused) as err, shop.client(T1) as c:
        c.call("POST", "/v1/settlements", content=b"ECB1", content_type="text/plain")
    assert err.value.status == 415 and err.value.code == "unsupported_media_type"
