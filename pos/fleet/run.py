"""A whole fleet run: a home of its own, the operator (a child process serving the home, or one at a URL), the
wallets and terminals, the days of taps played by terminal shards in a process pool, the syncs, the books."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pos.fleet.books import SyncTotals, check_books, issue_wallets, provision_all, sync_shard
from pos.fleet.plan import FleetOptions, terminal_ids, write_config
from pos.fleet.play import ShardResult, play_shard
from pos.home import Home
from wallet.errors import EcnyError, InvalidInput

EMBEDDED = "embedded"
BeforeSync = Callable[[Home, list[str]], None]  # test hook: runs after the last day's taps, before its sync


class FleetError(EcnyError):
    """The fleet's operator could not be started or reached."""


@dataclass
class FleetRun:
    home: Path
    options: FleetOptions
    operator: str = EMBEDDED
    workers: int = 1
    db_url: str | None = None
    before_sync: BeforeSync | None = None
    progress: bool = True


def _say(run: FleetRun, text: str) -> None:
    if run.progress:
        print(text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def operator_for(run: FleetRun) -> Iterator[str]:
    """The operator's URL: the one given, or a child process serving the fleet's home (``pos operator serve``)."""
    if run.operator != EMBEDDED:
        yield run.operator.rstrip("/")
        return
    if run.workers > 1 and not (run.db_url or "").startswith("postgresql"):
        raise InvalidInput("--workers above 1 needs PostgreSQL (--db postgresql+psycopg://HOST/DB)")
    port = _free_port()
    cmd = [sys.executable, "-c", "from pos.cli.main import main; raise SystemExit(main())", "--home", str(run.home),
           "operator", "serve", "--port", str(port), "--workers", str(run.workers)]
    if run.db_url:
        cmd += ["--db", run.db_url]
    log = open(run.home / "operator.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise FleetError(f"the fleet's operator did not start (see {run.home / 'operator.log'})")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class _InProcess:
    """One shard: played in this process (no pool to start)."""

    def map(self, fn: Callable[..., Any], *iterables: Any) -> Iterator[Any]:
        return map(fn, *iterables)


@contextmanager
def _pool(shards: int) -> Iterator[Any]:
    if shards == 1:
        yield _InProcess()
        return
    with ProcessPoolExecutor(shards, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def run_fleet(run: FleetRun) -> dict[str, Any]:
    """Play the fleet and check the books; the ``pos fleet run --json`` object."""
    opts = run.options
    opts.check()
    run.home.mkdir(parents=True, exist_ok=True)
    if (run.home / "cards").exists() or (run.home / "terminals").exists():
        raise InvalidInput(f"{run.home} holds cards or terminals already: a fleet run needs a fresh --home")
    write_config(opts, run.home / "merchants.yaml", "http://127.0.0.1:8700")
    home = Home(run.home)
    tids = terminal_ids(opts)
    journals = [run.home / "fleet" / f"approved-{s}.txt" for s in range(opts.shards)]
    journals[0].parent.mkdir(parents=True, exist_ok=True)
    with operator_for(run) as url:
        _say(run, f"fleet: operator {url}; issuing {opts.wallets} wallets, provisioning {len(tids)} terminals")
        issue_wallets(home, opts, url)
        provision_all(home, opts, url)
        t0 = time.perf_counter()
        played: list[ShardResult] = []
        synced: list[SyncTotals] = []
        with _pool(opts.shards) as pool:
            for day in range(opts.days):
                _say(run, f"fleet: day {day + 1}/{opts.days}: playing taps in {opts.shards} shards")
                played += pool.map(play_shard, *zip(*[(str(run.home), opts, s, day, str(journals[s]))
                                                      for s in range(opts.shards)], strict=True))
                last = day == opts.days - 1
                if last and run.before_sync is not None:
                    run.before_sync(home, tids)
                _say(run, f"fleet: day {day + 1}/{opts.days}: syncing {len(tids)} terminals")
                t_sync = time.perf_counter()
                day_sync = list(pool.map(sync_shard, *zip(*[(str(run.home), opts, s, url, last)
                                                            for s in range(opts.shards)], strict=True)))
                sync_seconds = time.perf_counter() - t_sync
                last_settled = sum(s.settled for s in day_sync)
                synced += day_sync
        seconds = time.perf_counter() - t0
        _say(run, "fleet: checking the books")
        books = check_books(home, opts, url, journals)
    failures = [f for s in synced for f in s.failures]
    approved = sum(r.approved for r in played)
    declines: dict[str, int] = {}
    for r in played:
        for k, v in r.declines.items():
            declines[k] = declines.get(k, 0) + v
    settled = sum(s.settled for s in synced)
    return {"terminals": len(tids), "wallets": opts.wallets, "taps": sum(r.taps for r in played),
            "approved": approved, "declined": sum(r.declined for r in played), "declines": declines,
            "torn": sum(r.torn for r in played), "settled": settled,
            "duplicates": sum(s.duplicates for s in synced), "double_spends": books["double_spends"],
            "clones": books["clones"], "clones_spent": books["clones_spent"], "lost": books["lost"],
            "doubled": books["doubled"], "reports_match": books["reports_match"] and not failures,
            "reports_matching": books["reports_matching"], "balance_errors": books["balance_errors"],
            "outages": sum(s.outages for s in synced), "sync_failures": failures,
            "seconds": round(seconds, 2), "taps_per_s": round(sum(r.taps for r in played) / seconds, 1),
            "settled_per_s": round(last_settled / sync_seconds, 1) if sync_seconds else 0.0}


def balanced(result: dict[str, Any]) -> bool:
    """Nothing lost, nothing doubled, every report matching."""
    return result["lost"] == 0 and result["doubled"] == 0 and bool(result["reports_match"])
