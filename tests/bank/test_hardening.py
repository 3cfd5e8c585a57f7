"""The operator under attack: typed JSON for every error, bodies capped and authenticated before they are read,
refund ids scoped to their terminal, no internal switches on the public API, an OpenAPI document that says what the
API answers, and loads counted only once the card took them."""

from __future__ import annotations

import json

import httpx
import pytest

from pos.cards.manage import apply_load
from pos.sync.client import OperatorRefused
from tests.support.shop import Shop
from wallet.keys import new_key
from wire import signing

T1, OTHER = "CMGQ0001", "ZZYS0001"


def _signed(shop: Shop, tid: str, method: str, path: str, body: bytes = b"", query: str = "") -> httpx.Response:
    with shop.client(tid) as c:
        key = c.key
    headers = signing.sign_request(key, tid, method, path, query, body)
    headers["content-type"] = "application/json"
    url = shop.url + path + (f"?{query}" if query else "")
    return httpx.request(method, url, content=body or None, headers=headers)


def _typed(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_every_error_is_typed_json(shop: Shop) -> None:
    _typed(httpx.get(shop.url + "/v1/admin/accounts/320508000000101",
                     headers={"authorization": "Bearer 令牌".encode()}), 401, "bad_admin_token")
    _typed(httpx.get(shop.url + "/nowhere"), 404, "no_route")
    _typed(httpx.delete(shop.url + "/v1/denylist"), 405, "method_not_allowed")
    _typed(_signed(shop, T1, "GET", "/v1/denylist", query=f"since={2**64}"), 400, "bad_request")
    _typed(_signed(shop, T1, "POST", "/v1/refunds", b"{not json"), 400, "bad_request")
    _typed(_signed(shop, T1, "GET", f"/v1/reports/{T1}/2025-02-30"), 400, "bad_request")
    with shop.admin() as a:
        token = a.admin_token
    _typed(httpx.post(shop.url + "/v1/admin/wallets", content=b"[]",
                      headers={"authorization": f"Bearer {token}"}), 400, "bad_request")
    # unsigned requests are refused 401 whatever their body
    _typed(httpx.post(shop.url + "/v1/refunds", content=b"{not json"), 401, "unsigned_request")
    _typed(httpx.post(shop.url + "/v1/settlements", content=b"\x00" * 100), 401, "unsigned_request")


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_bodies_are_capped_and_never_read_before_authentication(shop: Shop) -> None:
    op = shop.operator.operator
    big = b"x" * (op.limits.json + 1)
    _typed(httpx.post(shop.url + "/v1/admin/wallets", content=big), 413, "payload_too_large")
    _typed(_signed(shop, T1, "POST", "/v1/refunds", big), 413, "payload_too_large")

    def chunks():  # streamed without a Content-Length: counted as it comes
        for _ in range(op.limits.batch // 65536 + 2):
            yield b"x" * 65536

    with shop.client(T1) as c:
        headers = signing.sign_request(c.key, T1, "POST", "/v1/settlements", "", b"")
    _typed(httpx.post(shop.url + "/v1/settlements", content=chunks(), headers=headers), 413, "payload_too_large")
    # a request naming no known terminal is refused from its headers alone: its body is never read
    headers = signing.sign_request(new_key(), "HQSH0001", "POST", "/v1/settlements", "", b"")
    _typed(httpx.post(shop.url + "/v1/settlements", content=chunks(), headers=headers), 401, "unknown_terminal")


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_no_internal_switch_on_the_public_api(shop: Shop) -> None:
    body = json.dumps({"vouchers": [], "certificates": {}}).encode()
    with shop.client(T1) as c:
        headers = signing.sign_request(c.key, T1, "POST", "/v1/settlements", "defer_nonce=false", body)
    url = shop.url + "/v1/settlements?defer_nonce=false"
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    _typed(httpx.post(url, content=body, headers=headers), 401, "replayed_request")
    spec = httpx.get(shop.url + "/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (path, method)
            assert all(p["name"] != "defer_nonce" for p in op.get("parameters", ())), (path, method)
    assert {"400", "401", "403", "404", "409", "413", "503"} <= set(spec["paths"]["/v1/refunds"]["post"]["responses"])


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_refund_ids_belong_to_their_terminal(shop: Shop) -> None:
    (card,) = shop.cards(1)
    vid = shop.pay(T1, card, 1000).voucher_id
    shop.sync(T1)
    squat = f"{T1}-{vid}-R1"  # what T1's own first refund of this voucher will be called
    with shop.client(OTHER) as c, pytest.raises(OperatorRefused) as err:
        c.refund(squat, vid, 100)
    assert err.value.status == 403 and err.value.code == "foreign_refund_id"
    with shop.client(T1) as c:
        assert c.refund(squat, vid, 100)["amount_fen"] == 100


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_a_refused_load_is_not_counted(shop: Shop) -> None:
    (card,) = shop.cards(1, tier=4, balance_fen=1000)
    wallet_id = shop.home.cards.load(card).wallet_id
    with shop.admin() as a:
        refused = a.load_token(wallet_id, 700, after_counter=0)
        assert a.wallet(wallet_id)["loaded_fen"] == 1000  # issued, not yet taken
        assert a.cancel_load(wallet_id, refused.load_counter)["status"] == "cancelled"
        with pytest.raises(OperatorRefused) as err:
            a.confirm_load(wallet_id, refused.load_counter)
        assert err.value.status == 409 and err.value.code == "load_settled"
    balance, token = apply_load(shop.home, card, amount_fen=500)  # the card takes it: confirmed
    with shop.admin() as a:
        w = a.wallet(wallet_id)
        assert balance == 1500 and w["loaded_fen"] == 1500
        assert a.confirm_load(wallet_id, token.load_counter)["status"] == "confirmed"  # idempotent
        assert a.wallet(wallet_id)["loaded_fen"] == 1500


@pytest.mark.parametrize("operator_db", ["sqlite"], indirect=True)
def test_a_voucher_proves_a_load_never_confirmed(shop: Shop) -> None:
    (card,) = shop.cards(1, tier=4, balance_fen=1000)
    wallet_id = shop.home.cards.load(card).wallet_id
    with shop.admin() as a:
        answer = a.load_token(wallet_id, 2000, after_counter=0)
    from wallet.protocol import LoadToken

    token = LoadToken.decode(bytes.fromhex(answer.token))
    apply_load(shop.home, card, token_factory=lambda _s: token)  # taken, but nobody told the operator
    shop.pay(T1, card, 2500)  # more than the 1000 counted: the card's balance after it proves the load
    assert shop.sync(T1).settled == 1
    with shop.admin() as a:
        w = a.wallet(wallet_id)
    assert (w["loaded_fen"], w["spent_fen"], w["status"]) == (3000, 2500, "active")
