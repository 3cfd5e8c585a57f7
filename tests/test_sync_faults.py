"""Network and operator faults during sync: timeouts, 500s, cut-off answers, resets, an operator killed mid-batch
and restarted. Whatever happens, every voucher is settled exactly once and the terminal keeps selling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pos.cards.manage import issue_cards, tap_mock_card
from pos.home import Home
from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy, provision_terminal
from pos.sync.upload import sync_once
from tests.support.faults import FaultTransport
from tests.support.shop import Shop, shop_session

T1 = "CMGQ0001"
MERCHANT = "320508000000101"
FAST = RetryPolicy(attempts=6, base=0.01, cap=0.05)


@pytest.fixture
def shop(home: Home) -> Iterator[Shop]:
    with shop_session(home) as s:
        s.provision(T1)
        yield s


def take_payments(shop: Shop, n: int) -> int:
    cards = shop.cards((n + 9) // 10)
    total = 0
    for i in range(n):
        amount = 100 + i
        shop.pay(T1, cards[i // 10], amount)
        total += amount
    return total


def assert_settled_once(home: Home, url: str, n: int, total: int) -> None:
    with home.ledger(T1) as led:
        settlements = list(led.entries(kind="settlement"))
        assert len(settlements) == n and len({e.voucher_id for e in settlements}) == n
        assert all(e.data["status"] in ("settled", "duplicate") for e in settlements)
        assert led.sync_status().pending_count == 0
    with OperatorClient.for_admin(home, url) as adm:
        acc = adm.account(MERCHANT)
    assert acc["settled_fen"] == total


@pytest.mark.parametrize("faults", [
    ["timeout_after", "timeout_after"],
    ["500", "500_after", "500"],
    ["truncate", "reset"],
    ["timeout_before", "reset", "truncate", "500_after"],
])
def test_faulty_network_settles_each_voucher_once(shop: Shop, faults: list[str]) -> None:
    total = take_payments(shop, 12)
    transport = FaultTransport(faults, match="/v1/settlements")
    result = sync_once(shop.home, T1, shop.url, transport=transport, retry=FAST, batch_size=5)
    assert result.pending == 0 and result.uploaded == 12
    assert result.settled + result.duplicate == 12 and result.rejected == []
    assert transport.faults == []  # every scripted fault happened
    assert_settled_once(shop.home, shop.url, 12, total)


def test_operator_unreachable_terminal_keeps_selling_then_drains(shop: Shop) -> None:
    total = take_payments(shop, 3)
    transport = FaultTransport(["timeout_before"] * 3, match="/v1/settlements")
    with pytest.raises(OperatorUnavailable):
        sync_once(shop.home, T1, shop.url, transport=transport, retry=RetryPolicy(attempts=3, base=0.01))
    with shop.home.ledger(T1) as led:
        assert led.sync_status().pending_count == 3 and not list(led.entries(kind="settlement"))
    with pytest.raises(OperatorUnavailable):  # nothing listens there at all
        sync_once(shop.home, T1, "http://127.0.0.1:9", retry=RetryPolicy(attempts=2, base=0.01))
    (card,) = shop.cards(1)
    shop.pay(T1, card, 77)  # still selling offline
    result = shop.sync(T1)
    assert result.settled == 4 and result.pending == 0
    assert_settled_once(shop.home, shop.url, 4, total + 77)


class LoseAnswersOf(httpx.BaseTransport):
    """Passes every request to the operator, but answers 500 to any settlement carrying ``marker`` (the operator
    has settled it: only the answer is lost), every time."""

    def __init__(self, marker: bytes) -> None:
        self.inner = httpx.HTTPTransport()
        self.marker = marker
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        if request.url.path.endswith("/v1/settlements") and self.marker in request.content:
            self.lost += 1
            return httpx.Response(500, text="lost")
        return response


def test_pipelined_sync_failing_mid_way_records_only_what_came_before(shop: Shop) -> None:
    """Five batches, the third's answers always lost while later ones are in flight: the first two are recorded,
    nothing after the failure is, and the next sync settles everything exactly once."""
    total = take_payments(shop, 25)
    with shop.home.ledger(T1) as led:
        outbox = led.outbox()
        third = bytes.fromhex(outbox[10].data["voucher"])
    transport = LoseAnswersOf(third)
    with pytest.raises(OperatorUnavailable):
        sync_once(shop.home, T1, shop.url, transport=transport, retry=RetryPolicy(attempts=2, base=0.01),
                  batch_size=5)
    assert transport.lost == 2
    with shop.home.ledger(T1) as led:
        recorded = {e.voucher_id for e in led.entries(kind="settlement")}
        assert recorded == {e.voucher_id for e in outbox[:10]}
        assert led.sync_status().pending_count == 15
    result = sync_once(shop.home, T1, shop.url, retry=FAST, batch_size=5)
    assert result.uploaded == 15 and result.rejected == [] and result.pending == 0
    assert result.duplicate >= 5  # the third batch (and any sent after it) was settled by the first sync
    assert_settled_once(shop.home, shop.url, 25, total)


def test_one_batch_at_a_time_on_request(shop: Shop) -> None:
    total = take_payments(shop, 12)
    result = sync_once(shop.home, T1, shop.url, retry=FAST, batch_size=5, depth=1)
    assert (result.uploaded, result.settled, result.pending) == (12, 12, 0)
    assert_settled_once(shop.home, shop.url, 12, total)


# -- a real operator process, killed in the middle of a batch ------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_operator(home: Path, port: int, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "ECNY_OPERATOR_FAULT": fault or ""}
    proc = subprocess.Popen([sys.executable, "-m", "pos.cli.main", "--home", str(home), "operator", "serve", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("operator did not start")


@pytest.fixture
def operator_process(home: Home) -> Iterator[dict]:
    state: dict = {"port": free_port(), "proc": None}
    yield state
    if state["proc"] is not None and state["proc"].poll() is None:
        state["proc"].terminate()
        state["proc"].wait(10)


@pytest.mark.parametrize("fault", ["crash_before_commit", "crash_after_commit"])
def test_operator_killed_mid_batch_and_restarted(home: Home, operator_process: dict, fault: str) -> None:
    port = operator_process["port"]
    url = f"http://127.0.0.1:{port}"
    operator_process["proc"] = start_operator(home.root, port)
    provision_terminal(home, T1, url)
    cards = [c.card_id for c in issue_cards(home, 4, 100_000, 2, operator_url=url)]
    total = 0
    for i in range(15):
        assert tap_mock_card(home, T1, cards[i // 10], 200 + i).approved
        total += 200 + i
    operator_process["proc"].terminate()
    operator_process["proc"].wait(10)
    operator_process["proc"] = start_operator(home.root, port, fault)
    with pytest.raises(OperatorUnavailable):
        sync_once(home, T1, url, retry=RetryPolicy(attempts=2, base=0.01), batch_size=10)
    assert operator_process["proc"].wait(10) == 137  # it died inside the first batch
    with home.ledger(T1) as led:
        assert led.sync_status().pending_count == 15  # nothing recorded: the answer never came
    operator_process["proc"] = start_operator(home.root, port)
    result = sync_once(home, T1, url, retry=FAST, batch_size=10)
    assert result.pending == 0 and result.rejected == []
    expected_duplicates = 10 if fault == "crash_after_commit" else 0
    assert (result.settled, result.duplicate) == (15 - expected_duplicates, expected_duplicates)
    assert_settled_once(home, url, 15, total)
