"""Several operator processes on one PostgreSQL database (``pos operator serve --workers N``, or several hosts):
exactly-once settlement, double-spend detection, denylist versions, refunds and nonces are decided by the database,
so they hold when the same terminal, wallet or request reaches two processes at the same instant. A worker that
dies is replaced and the port keeps answering. SQLite refuses more than one worker.

Two operator processes serve one home and one PostgreSQL schema for the whole module (starting one costs seconds):
``multi`` with two workers on one port, ``single`` with one worker on another port.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pos.cards.manage import issue_cards, tap_mock_card
from pos.cli.main import main
from pos.home import Home
from pos.sync.client import OperatorClient, OperatorRefused, provision_terminal
from pos.sync.upload import sync_once
from tests.bank.conftest import POSTGRES_URL
from tests.support.shop import FAST_RETRY
from wire import signing
from wire.models import SettlementRequest

SERVE = "from pos.cli.main import main; raise SystemExit(main())"
# The module's operator processes start once: its tests run in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("operator-workers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, db: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "--home", str(home), "operator", "serve", "--port",
                             str(port), "--db", db, "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _wait(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"operator at {url} did not start")


class Fleet:
    def __init__(self, home: Home, multi: str, single: str, multi_pid: int) -> None:
        self.home, self.multi, self.single, self.multi_pid = home, multi, single, multi_pid

    def card(self, balance_fen: int = 100_000) -> str:
        return issue_cards(self.home, 4, balance_fen, 1, operator_url=self.multi)[0].card_id

    def client(self, tid: str, url: str) -> OperatorClient:
        return OperatorClient.for_terminal(self.home, tid, url, retry=FAST_RETRY)


@pytest.fixture(scope="module")
def fleet(_postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    schema = f"ecny_test_{secrets.token_hex(6)}"
    _postgres.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    db = f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    home = Home(tmp_path_factory.mktemp("workers") / "home")
    home.pki  # noqa: B018 (the CA, created once before two processes race for it)
    procs = [_serve(home.root, db, 2), _serve(home.root, db, 1)]
    try:
        for proc, url in procs:
            _wait(proc, url)
        for tid in ("CMGQ0001", "CMGQ0002", "ZZYS0001"):
            provision_terminal(home, tid, procs[0][1])
        yield Fleet(home, procs[0][1], procs[1][1], procs[0][0].pid)
    finally:
        for proc, _ in procs:
            os.killpg(proc.pid, signal.SIGINT)
        for proc, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _postgres.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_one_outbox_synced_through_two_processes_settles_each_voucher_once(fleet: Fleet) -> None:
    card = fleet.card()
    vids = [tap_mock_card(fleet.home, "CMGQ0001", card, 100 + i).voucher_id for i in range(8)]
    a, b = _at_once(lambda: sync_once(fleet.home, "CMGQ0001", fleet.multi, retry=FAST_RETRY, batch_size=3),
                    lambda: sync_once(fleet.home, "CMGQ0001", fleet.single, retry=FAST_RETRY, batch_size=3))
    assert a.settled + b.settled == 8 and not a.rejected and not b.rejected
    with fleet.client("CMGQ0001", fleet.single) as cli:
        report = cli.report(time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600)))
    mine = [v for v in report.vouchers if v[0] in vids]
    assert sorted(v[0] for v in mine) == sorted(vids) and {v[2] for v in mine} == {"settled"}
    with fleet.home.ledger("CMGQ0001") as led:
        answers = [e.voucher_id for e in led.entries(kind="settlement") if e.voucher_id in vids]
    assert sorted(answers) == sorted(vids)


def test_a_clones_two_spends_at_the_same_instant_settle_once_and_denylist_once(fleet: Fleet) -> None:
    card = fleet.card()
    clone = fleet.home.cards.clone(card)
    wallet_id = clone.wallet_id
    tap_mock_card(fleet.home, "CMGQ0002", card, 700)
    tap_mock_card(fleet.home, "ZZYS0001", clone.card_id, 900)
    with fleet.client("CMGQ0002", fleet.multi) as cli:
        before = cli.denylist(0).version
    a, b = _at_once(lambda: sync_once(fleet.home, "CMGQ0002", fleet.multi, retry=FAST_RETRY),
                    lambda: sync_once(fleet.home, "ZZYS0001", fleet.single, retry=FAST_RETRY))
    assert a.settled + b.settled == 1
    rejected = a.rejected + b.rejected
    assert len(rejected) == 1 and rejected[0]["reason"] == "double_spend"
    with fleet.client("CMGQ0002", fleet.single) as cli:
        changes = cli.denylist(before)
    assert changes.added.count(wallet_id) == 1 and changes.version == before + 1


def test_refunds_raced_across_processes_never_exceed_the_payment(fleet: Fleet) -> None:
    card = fleet.card()
    vid = tap_mock_card(fleet.home, "CMGQ0001", card, 1000).voucher_id
    sync_once(fleet.home, "CMGQ0001", fleet.multi, retry=FAST_RETRY)
    with fleet.client("CMGQ0001", fleet.multi) as a, fleet.client("CMGQ0001", fleet.single) as b:
        first, second = _at_once(lambda: a.refund("CMGQ0001-race-1", vid, 600),
                                 lambda: b.refund("CMGQ0001-race-2", vid, 600))
        same = _at_once(lambda: a.refund("CMGQ0001-race-3", vid, 100), lambda: b.refund("CMGQ0001-race-3", vid, 100))
    outcomes = [first, second]
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, OperatorRefused) for o in outcomes if isinstance(o, Exception))
    assert [o.replayed for o in same] in ([False, True], [True, False])
    assert {o.refunded_total_fen for o in same} == {700}


def test_one_signed_request_replayed_to_two_processes_is_served_once(fleet: Fleet) -> None:
    key = fleet.client("ZZYS0001", fleet.multi).key
    assert key is not None
    body = SettlementRequest(vouchers=[], certificates={}).model_dump_json().encode()
    headers = signing.sign_request(key, "ZZYS0001", "POST", "/v1/settlements", "", body)
    headers["content-type"] = "application/json"
    codes = _at_once(*[lambda url=url: httpx.post(f"{url}/v1/settlements", content=body, headers=headers).status_code
                       for url in (fleet.multi, fleet.single, fleet.multi)])
    assert sorted(codes) == [200, 401, 401]


def test_a_dead_worker_is_replaced_and_the_port_keeps_answering(fleet: Fleet) -> None:
    workers = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(fleet.multi_pid)], text=True,
                                              capture_output=True).stdout.split()]
    servers = [p for p in workers if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert len(servers) >= 2
    os.kill(servers[0], signal.SIGKILL)
    for _ in range(20):
        assert httpx.get(f"{fleet.multi}/healthz", timeout=5).status_code == 200
    card = fleet.card()
    tap_mock_card(fleet.home, "CMGQ0002", card, 300)
    assert sync_once(fleet.home, "CMGQ0002", fleet.multi, retry=FAST_RETRY).settled == 1


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "--json", "operator", "serve", "--workers", "2"]) == 2
    assert "PostgreSQL" in capsys.readouterr().out
    assert not (tmp_path / "operator").exists()
