"""The operator's HTTP surface: health, OpenAPI, terminal authentication, typed 4xx errors that change nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from pos.sync.client import OperatorBadInput, OperatorClient, OperatorRefused
from tests.support.shop import Shop
from wallet.keys import new_key
from wire import signing

T1, T2, OTHER = "CMGQ0001", "CMGQ0002", "ZZYS0001"


def signed(shop: Shop, tid: str, key, method: str, path: str, body: dict | None = None,
           now_ms: int | None = None) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    headers = signing.sign_request(key, tid, method, path, "", content, now_ms)
    headers["content-type"] = "application/json"
    return httpx.request(method, shop.url + path, content=content or None, headers=headers)


def test_health_and_openapi(shop: Shop) -> None:
    assert httpx.get(shop.url + "/healthz").json() == {"status": "ok"}
    paths = httpx.get(shop.url + "/openapi.json").json()["paths"]
    assert {"/v1/settlements", "/v1/denylist", "/v1/refunds", "/v1/reports/{terminal_id}/{day}"} <= set(paths)


def test_unsigned_and_unknown_terminal_refused(shop: Shop) -> None:
    r = httpx.get(shop.url + "/v1/denylist")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unsigned_request"
    r = signed(shop, "HQSH0001", new_key(), "GET", "/v1/denylist")  # configured but never provisioned
    assert r.status_code == 401 and r.json()["error"]["code"] == "unknown_terminal"


def test_impersonating_terminal_refused(shop: Shop) -> None:
    with shop.client(T2) as c2:
        r = signed(shop, T1, c2.key, "GET", "/v1/denylist")  # T2's key, claiming to be T1
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_request_signature"


def test_revoked_terminal_refused(shop: Shop) -> None:
    with shop.admin() as admin:
        admin.revoke_terminal(T2)
    with shop.client(T2) as c2, pytest.raises(OperatorRefused) as err:
        c2.denylist(0)
    assert err.value.status == 403 and err.value.code == "terminal_revoked"
    with shop.client(T1) as c1:
        assert c1.denylist(0)["version"] == 0


def test_replayed_stale_and_altered_requests_refused(shop: Shop) -> None:
    with shop.client(T1) as c1:
        key = c1.key
    body = b'{"vouchers":[],"certificates":{}}'
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", body)
    headers["content-type"] = "application/json"
    first = httpx.post(shop.url + "/v1/settlements", content=body, headers=headers)
    assert first.status_code == 200
    again = httpx.post(shop.url + "/v1/settlements", content=body, headers=headers)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replayed_request"
    headers = signing.sign_request(key, T1, "POST", "/v1/settlements", "", body)
    altered = httpx.post(shop.url + "/v1/settlements", content=body.replace(b"[]", b"[ ]", 1), headers=headers)
    assert altered.status_code == 401 and altered.json()["error"]["code"] == "bad_request_signature"
    old = signed(shop, T1, key, "GET", "/v1/denylist", now_ms=signing.MAX_SKEW_MS)
    assert old.status_code == 401 and old.json()["error"]["code"] == "clock_skew"


def test_bad_input_is_a_typed_400(shop: Shop) -> None:
    with shop.client(T1) as c1:
        with pytest.raises(OperatorBadInput) as err:
            c1.settle([{"voucher": "zz", "cert": "0" * 64, "issuer": "0" * 64}], {})
        assert err.value.status == 400 and err.value.code == "bad_request"
        with pytest.raises(OperatorBadInput):
            c1.settle([{"voucher": "00", "cert": "0" * 64, "issuer": "0" * 64}], {})  # certificate not sent
        with pytest.raises(OperatorBadInput):
            c1.refund("r1", "not-a-voucher", None)
    with shop.admin() as admin:
        assert admin.account("320508000000101")["settled_fen"] == 0


def test_terminal_reads_only_its_own_report(shop: Shop) -> None:
    with shop.client(T1) as c1:
        c1.terminal_id = T2  # ask for T2's report while signing as... T2's id with T1's key: refused
        with pytest.raises(OperatorRefused) as err:
            c1.report("2025-01-01")
        assert err.value.status == 401
    with shop.client(T1) as c1:
        r = signed(shop, T1, c1.key, "GET", f"/v1/reports/{T2}/2025-01-01")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_your_report"


def test_admin_calls_need_the_token(shop: Shop) -> None:
    with OperatorClient(shop.url, admin_token="wrong") as c, pytest.raises(OperatorRefused) as err:
        c.account("320508000000101")
    assert err.value.status == 401 and err.value.code == "bad_admin_token"
