"""The operator's time rules at the HTTP edge: its own time in every answer, a skewed request refused clock_skew
with that time, a request signed with a clock correction accepted (and the correction covered by the signature)."""

from __future__ import annotations

import httpx

from pos.home import Home
from pos.sync.client import terminal_key_path
from tests.support.shop import shop_session
from wallet import clock
from wallet.clock import VirtualClock
from wallet.keys import key_from_pem
from wire import signing

TID = "CMGQ0001"


def test_every_answer_has_the_operator_time_and_a_skewed_request_is_told_it(home: Home) -> None:
    vc = VirtualClock.at("2026-03-01T12:00")
    with clock.use(vc), shop_session(home) as shop:
        shop.provision(TID)
        key = key_from_pem(terminal_key_path(home, TID).read_bytes())
        with httpx.Client(base_url=shop.url) as http:
            assert http.get("/healthz").headers[signing.H_OPERATOR_TIME] == str(vc.ms)
            assert http.get("/v1/nope").headers[signing.H_OPERATOR_TIME] == str(vc.ms)  # errors too
            ahead = vc.ms + 2 * 3_600_000
            r = http.get("/v1/denylist", headers=signing.sign_request(key, TID, "GET", "/v1/denylist", "", b"",
                                                                      now_ms=ahead))
            assert r.status_code == 401 and r.json()["error"]["code"] == "clock_skew"
            op_time = int(r.headers[signing.H_OPERATOR_TIME])
            correction = signing.offset_from(op_time, ahead, ahead)
            assert correction == -2 * 3_600_000
            ok = signing.sign_request(key, TID, "GET", "/v1/denylist", "", b"", now_ms=ahead, correction_ms=correction)
            assert http.get("/v1/denylist", headers=ok).status_code == 200
            forged = signing.sign_request(key, TID, "GET", "/v1/denylist", "", b"", now_ms=ahead,
                                          correction_ms=correction)
            forged[signing.H_CORRECTION] = str(correction + 1)  # the correction is signed
            r = http.get("/v1/denylist", headers=forged)
            assert r.status_code == 401 and r.json()["error"]["code"] == "bad_request_signature"
            bad = dict(ok, **{signing.H_CORRECTION: "soon", signing.H_NONCE: "0" * 32})
            assert http.get("/v1/denylist", headers=bad).json()["error"]["code"] == "bad_request_signature"
