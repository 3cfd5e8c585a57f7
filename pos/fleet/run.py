"""A whole fleet run: a home of its own, the operator (a child process serving the home, or one at a URL), the
shards (one process each when there are several, see :mod:`pos.fleet.shard`), the days of taps and syncs, the
books, and where the time went."""

from __future__ import annotations

import multiprocessing
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pos.fleet.books import SyncTotals
from pos.fleet.plan import FleetOptions, terminal_ids, write_config
from pos.fleet.play import ShardResult
from pos.fleet.shard import Shard, ShardSpec, peak_rss_mb, serve
from pos.home import Home
from pos.sync.reports import today
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
    local_back_office: bool | None = None  # wallets registered in-process (default: with the embedded operator)


def _say(run: FleetRun, text: str) -> None:
    if run.progress:
        print(text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def operator_for(run: FleetRun) -> Iterator[tuple[str, int | None]]:
    """The operator's URL and process id: the one given (no process id), or a child process serving the fleet's
    home (``pos operator serve``)."""
    if run.operator != EMBEDDED:
        yield run.operator.rstrip("/"), None
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
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _peak_rss_mb(pid: int | None) -> float | None:
    """A process's peak resident memory (VmHWM), with its children's (the operator's workers)."""
    if pid is None:
        return None
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        total = 0
        for p in pids:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    except (OSError, ValueError):
        return None
    return round(total / 1024, 1)


class _Here:
    """The one shard of a run, in this process."""

    def __init__(self, spec: ShardSpec) -> None:
        self.shard = Shard(spec)
        self._answer: Any = None

    def send(self, name: str, *args: Any) -> None:
        self._answer = getattr(self.shard, name)(*args)

    def recv(self) -> Any:
        return self._answer


class _Process:
    """A shard in a process of its own (:func:`pos.fleet.shard.serve`)."""

    def __init__(self, spec: ShardSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, spec), name=f"fleet-shard-{spec.shard}", daemon=True)
        self.proc.start()
        child.close()
        self.started = False

    def send(self, name: str, *args: Any) -> None:
        if not self.started:
            self.recv()  # the shard is built
            self.started = True
        self.conn.send((name, args))

    def recv(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise FleetError(f"fleet shard process {self.proc.name} died (exit code {self.proc.exitcode})") from None
        if status != "ok":
            raise FleetError(f"fleet shard process {self.proc.name} failed:\n{value}")
        return value


class _Shards:
    """Every shard of the run; :meth:`all` calls the same method on each at once and gathers the answers."""

    def __init__(self, specs: list[ShardSpec]) -> None:
        self.members: list[_Here | _Process] = ([_Here(specs[0])] if len(specs) == 1
                                                else [_Process(spec) for spec in specs])

    def all(self, name: str, *args: Any) -> list[Any]:
        for m in self.members:
            m.send(name, *args)
        return [m.recv() for m in self.members]

    def close(self) -> None:
        for m in self.members:
            try:
                m.send("close")
                m.recv()
            except (FleetError, OSError):
                pass
            if isinstance(m, _Process):
                m.proc.join(timeout=30)
                if m.proc.is_alive():
                    m.proc.kill()


def run_fleet(run: FleetRun) -> dict[str, Any]:
    """Play the fleet and check the books; the ``pos fleet run --json`` object."""
    opts = run.options
    opts.check()
    t_start = time.perf_counter()
    run.home.mkdir(parents=True, exist_ok=True)
    if (run.home / "cards").exists() or (run.home / "terminals").exists():
        raise InvalidInput(f"{run.home} holds cards or terminals already: a fleet run needs a fresh --home")
    write_config(opts, run.home / "merchants.yaml", "http://127.0.0.1:8700")
    home = Home(run.home)
    tids = terminal_ids(opts)
    local = run.local_back_office if run.local_back_office is not None else run.operator == EMBEDDED
    phases: dict[str, float] = {}
    with operator_for(run) as (url, operator_pid):
        base = secrets.randbelow(10**11)  # the run's wallet ids: consecutive from a random start
        specs = [ShardSpec(str(run.home), opts, s, url, local, run.db_url, run.progress, base)
                 for s in range(opts.shards)]
        shards = _Shards(specs)
        try:
            _say(run, f"fleet: operator {url}; {opts.shards} shard(s) provisioning {len(tids)} terminals, issuing "
                      f"{opts.wallets} wallets")
            t = time.perf_counter()
            shards.all("issue")
            phases["issue_s"] = time.perf_counter() - t
            t0 = time.perf_counter()
            played: list[ShardResult] = []
            synced: list[SyncTotals] = []
            sync_seconds = 0.0
            last_settled = 0
            for day in range(opts.days):
                _say(run, f"fleet: day {day + 1}/{opts.days}: playing taps in {opts.shards} shard(s)")
                t = time.perf_counter()
                played += shards.all("play", day)
                phases["play_s"] = phases.get("play_s", 0.0) + time.perf_counter() - t
                last = day == opts.days - 1
                if last and run.before_sync is not None:
                    run.before_sync(home, tids)
                _say(run, f"fleet: day {day + 1}/{opts.days}: syncing {len(tids)} terminals")
                t = time.perf_counter()
                day_sync: list[SyncTotals] = shards.all("sync", last)
                sync_seconds = time.perf_counter() - t
                phases["sync_s"] = phases.get("sync_s", 0.0) + sync_seconds
                last_settled = sum(s.settled for s in day_sync)
                synced += day_sync
            seconds = time.perf_counter() - t0
            _say(run, "fleet: checking the books")
            t = time.perf_counter()
            books: list[dict[str, Any]] = shards.all("books", today())
            phases["books_s"] = time.perf_counter() - t
            shard_rss = shards.all("rss")
        finally:
            shards.close()
        operator_rss = _peak_rss_mb(operator_pid)
    total = {k: sum(b[k] for b in books) for k in ("settled", "lost", "doubled", "double_spends", "clones",
                                                   "clones_spent", "balance_errors", "reports_matching", "strays")}
    failures = [f for s in synced for f in s.failures]
    declines: dict[str, int] = {}
    for r in played:
        for k, v in r.declines.items():
            declines[k] = declines.get(k, 0) + v
    n_taps = sum(r.taps for r in played)
    reports_match = (total["reports_matching"] == len(tids) and total["balance_errors"] == 0 and not failures
                     and total["clones"] == total["clones_spent"] and total["strays"] == 0)
    return {"terminals": len(tids), "wallets": opts.wallets, "taps": n_taps,
            "approved": sum(r.approved for r in played), "declined": sum(r.declined for r in played),
            "declines": declines, "torn": sum(r.torn for r in played),
            "settled_in_syncs": sum(s.settled for s in synced),  # the syncs' own count (an interrupted one's is lost)
            "duplicates": sum(s.duplicates for s in synced), **total, "reports_match": reports_match,
            "outages": sum(s.outages for s in synced), "sync_failures": failures,
            "seconds": round(seconds, 2), "taps_per_s": round(n_taps / seconds, 1) if seconds else 0.0,
            "settled_per_s": round(last_settled / sync_seconds, 1) if sync_seconds else 0.0,
            "shards": opts.shards, "wall_s": round(time.perf_counter() - t_start, 2),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "shard_play_cpu_s": [round(sum(r.cpu_seconds for r in played if r.shard == s), 2)
                                 for s in range(opts.shards)],
            "shard_play_rss_mb": [round(max(r.rss_mb for r in played if r.shard == s), 1) for s in range(opts.shards)],
            "shard_rss_mb": [round(r, 1) for r in shard_rss], "operator_rss_mb": operator_rss,
            "this_process_rss_mb": round(peak_rss_mb(), 1)}


def balanced(result: dict[str, Any]) -> bool:
    """Nothing lost, nothing doubled, every report matching."""
    return result["lost"] == 0 and result["doubled"] == 0 and bool(result["reports_match"])
