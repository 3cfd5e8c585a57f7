"""Sync by outbox size: `pos sync` of one terminal's outbox of 1,000, 10,000 and 100,000 vouchers.

    .venv/bin/python benchmarks/sync_scale.py [--sizes 1000,10000,100000] [--postgres URL] [--keep]

One terminal takes the vouchers once (real vouchers, signed with the cards' keys and recorded through the payment
session's ledger code: benchmarks/sync_throughput.py), its ledger growing size by size; a copy of the terminal's
folder (ledger and key) is kept at each size. Then, for each size, from that copy:

- ingest: a fresh operator (``pos operator serve``, one worker) on a copy of the database with the terminal and every
  card's wallet on file is sent the outbox the way the sync sends it (binary batches of 500, the first alone, then
  two in flight), nothing recorded on the terminal: the operator's ingest rate;
- sync: a second fresh operator on a second copy; ``pos sync --json`` runs in a child process, through the CLI's own
  entry point, with timers around the sync's parts: opening the operator client and the ledger, verifying the
  ledger (the entries since its last checkpoint), reading the outbox and cutting it into batches, encoding the
  batches, recording the answers (one settlement entry per voucher). ``waiting_for_operator`` is the rest of the
  time until the last answer is recorded (the terminal's thread waiting for answers); ``after_upload`` the denylist
  fetch, the unresolved report, the campaigns, the status and the sync entry. The child reports its RSS before the
  sync, right after the outbox's first page is read and at its peak; the operator's CPU seconds during the sync
  come from /proc;
- no-op: ``pos sync`` again in a new child, nothing left to upload;
- checks: the operator's vouchers of the terminal are the ledger's payments, each once; every payment has exactly
  one settlement entry, and it says settled; the outbox is empty.

``--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test`` keeps the operators' books in schemas of their own
on that server (dropped afterwards) instead of SQLite files. ``BENCH_DIR`` picks where the temporary home goes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import sync_throughput as st

from pos.home import Home
from pos.sync.client import provision_terminal
from pos.sync.upload import BATCH_SIZE

MIB = 1024 * 1024


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set size now (``VmHWM``: at its peak so far), in MiB. Not ``ru_maxrss``: Linux keeps
    that across exec, so a child started by a big parent reports the parent's size at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status")


class Parts:
    """Wall seconds spent in each timed part of the sync, when the upload ended and the RSS after the outbox read."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.started: dict[str, float] = {}
        self.upload_done = 0.0  # the end of the last outbox read or answer recorded
        self.rss_after_outbox = 0.0

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Replace ``owner.name`` with a wrapper that adds its wall time to ``part``."""
        real = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            self.started.setdefault(part, t0)
            try:
                return real(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                self.seconds[part] += t1 - t0
                self.calls[part] += 1
                if part in ("outbox_read", "record"):
                    self.upload_done = t1
                if name == "outbox_page" and not self.rss_after_outbox:
                    self.rss_after_outbox = rss_mib()  # after the first page (the sync reads the outbox in pages)

        setattr(owner, name, timed)


def child(root: str, url: str) -> None:
    """Run ``pos sync --json`` in this process with its parts timed; print what was measured as JSON."""
    from pos.cli.main import main
    from pos.ledger import Ledger
    from pos.sync import upload

    parts = Parts()
    parts.wrap(upload, "sync_once", "sync_once")
    parts.wrap(Ledger, "check", "verify")
    parts.wrap(Ledger, "outbox_totals", "outbox_read")
    parts.wrap(Ledger, "outbox_page", "outbox_read")
    parts.wrap(upload, "known_versions", "outbox_read")
    parts.wrap(upload, "_batch", "encode")
    parts.wrap(upload, "_record", "record")
    before = rss_mib()
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = main(["--home", root, "sync", "--terminal", st.TERMINAL, "--operator", url, "--json"])
    total = time.perf_counter() - t0
    sync_s = parts.seconds["sync_once"]
    own = sum(parts.seconds[p] for p in ("verify", "outbox_read", "encode", "record"))
    start = parts.started.get("sync_once", t0)
    print(json.dumps({
        "exit": status, "answer": json.loads(out.getvalue() or "null"), "cli_s": total, "sync_once_s": sync_s,
        "parts_s": {p: parts.seconds[p] for p in ("verify", "outbox_read", "encode", "record")},
        "open_s": parts.started.get("verify", start) - start,  # the operator client and the ledger opened
        "waiting_for_operator_s": parts.upload_done - parts.started.get("verify", start) - own,
        "after_upload_s": start + sync_s - parts.upload_done,
        "batches": parts.calls["record"],
        "rss_mib": {"before_sync": before, "after_outbox_read": parts.rss_after_outbox,
                    "peak": rss_mib("VmHWM")},
    }))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sync(root: Path, url: str, operator_pid: int) -> dict[str, Any]:
    """``pos sync`` in a child process (see :func:`child`), with the process's wall time and the operator's CPU."""
    cpu0, t0 = cpu_seconds(operator_pid), time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(root), url], capture_output=True, text=True,
                          check=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(operator_pid) - cpu0
    if done.returncode != 0:
        raise SystemExit(f"the sync's child process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if got["exit"] != 0:
        raise SystemExit(f"pos sync failed ({got['exit']}): {got['answer']}")
    got["process_s"], got["operator_cpu_s"] = wall, cpu
    return got


@contextlib.contextmanager
def operator(root: Path, db: str) -> Iterator[tuple[int, str]]:
    """A fresh ``pos operator serve`` on ``db``, answering; its pid and URL."""
    proc, url = st.start_operator(root, db)
    try:
        yield proc.pid, url
    finally:
        proc.terminate()
        proc.wait(30)


def copy_ledger(source: Path, target: Path) -> None:
    """``target`` becomes a copy of the terminal folder ``source`` (its ledger copied consistently)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ledger.db*"))
    with contextlib.closing(sqlite3.connect(source / "ledger.db")) as src, \
            contextlib.closing(sqlite3.connect(target / "ledger.db")) as dst:
        src.backup(dst)


def grow(home: Home, url: str, sizes: list[int], snapshots: Path) -> dict[int, float]:
    """Take the vouchers on the terminal in increments, keeping a copy of its folder at each size; the seconds
    each increment took."""
    made, took = 0, {}
    for n in sizes:
        t0 = time.perf_counter()
        st.make_vouchers(home, n - made, url)
        took[n], made = time.perf_counter() - t0, n
        copy_ledger(home.terminal_dir(st.TERMINAL), snapshots / str(n))
    return took


def operator_voucher_ids(dbs: st.Databases, url: str) -> list[str]:
    """The voucher ids the operator at ``url`` holds for the terminal."""
    sql = "SELECT voucher_id FROM {}vouchers WHERE terminal_id = '" + st.TERMINAL + "'"
    if dbs._admin is None:
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return [r[0] for r in conn.execute(sql.format(""))]
    schema = url.rsplit("%3D", 1)[1]
    return [r[0] for r in dbs._admin.execute(sql.format(f'"{schema}".'))]


def check_exactly_once(home: Home, operator_ids: list[str]) -> dict[str, Any]:
    """Whether every payment of the ledger was settled exactly once, on both sides."""
    path = home.ledger_path(st.TERMINAL)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        payments = {r[0] for r in conn.execute("SELECT voucher_id FROM entries WHERE kind = 'payment'")}
        answers = Counter((r[0], r[1]) for r in conn.execute(
            "SELECT voucher_id, json_extract(data, '$.status') FROM entries WHERE kind = 'settlement'"))
    with home.ledger(st.TERMINAL, readonly=True) as ledger:
        outbox_left = len(ledger.outbox())
    settled_once = {vid for (vid, status), k in answers.items() if status == "settled" and k == 1}
    ok = (outbox_left == 0 and len(operator_ids) == len(set(operator_ids)) == len(payments)
          and set(operator_ids) == payments and settled_once == payments and sum(answers.values()) == len(payments))
    return {"payments": len(payments), "operator_vouchers": len(operator_ids),
            "operator_distinct": len(set(operator_ids)), "settlement_entries": sum(answers.values()),
            "settled_once": len(settled_once), "outbox_left": outbox_left, "exactly_once": ok}


def measure(home: Home, dbs: st.Databases, source: str, n: int, snapshot: Path) -> dict[str, Any]:
    """Ingest, sync, no-op sync and the checks for the outbox of ``n`` vouchers kept in ``snapshot``."""
    root, terminal = home.root, home.terminal_dir(st.TERMINAL)
    copy_ledger(snapshot, terminal)
    ingest_db, sync_db = dbs.url(f"ingest{n}"), dbs.url(f"sync{n}")
    for target in (ingest_db, sync_db):
        dbs.copy(source, target)
    load = os.getloadavg()
    with operator(root, ingest_db) as (_, url):
        ingested, ingest_s = st.ingest(home, url, BATCH_SIZE)
    copy_ledger(snapshot, terminal)  # as it was before the ingest opened it
    with operator(root, sync_db) as (pid, url):
        sync = run_sync(root, url, pid)
        noop = run_sync(root, url, pid)
        checks = check_exactly_once(home, operator_voucher_ids(dbs, sync_db))
    if dbs.postgres is None:
        for db in (ingest_db, sync_db):
            Path(db.removeprefix("sqlite:///")).unlink()
    answer = sync["answer"]
    checks["exactly_once"] &= (answer["settled"] == n and answer["duplicate"] == 0 and not answer["rejected"]
                               and ingested == n and noop["answer"]["uploaded"] == 0)
    return {
        "vouchers": n, "ledger_mib": round((snapshot / "ledger.db").stat().st_size / MIB, 1),
        "load_average_before": [round(x, 2) for x in load],
        "sync": summary(sync, n), "noop_sync": summary(noop, 0),
        "ingest": {"wall_s": round(ingest_s, 3), "vouchers_per_s": round(ingested / ingest_s)},
        "checks": checks,
    }


def _s(seconds: float) -> float:
    return round(seconds, 3)


def summary(got: dict[str, Any], n: int) -> dict[str, Any]:
    """The figures of one child's sync."""
    out = {"wall_s": _s(got["sync_once_s"]), "cli_s": _s(got["cli_s"]), "process_s": _s(got["process_s"]),
           "uploaded": got["answer"]["uploaded"], "settled": got["answer"]["settled"]}
    if n:
        out["vouchers_per_s"] = round(n / got["sync_once_s"])
    out["split_s"] = {"open": _s(got["open_s"]), **{k: _s(v) for k, v in got["parts_s"].items()},
                      "waiting_for_operator": _s(got["waiting_for_operator_s"]),
                      "after_upload": _s(got["after_upload_s"])}
    out["batches"] = got["batches"]
    out["operator_cpu_s"] = _s(got["operator_cpu_s"])
    out["rss_mib"] = {k: round(v, 1) for k, v in got["rss_mib"].items()}
    return out


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="outbox sizes, comma-separated")
    ap.add_argument("--postgres", metavar="URL", help="keep the operators' books on this PostgreSQL server")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home (printed) afterwards")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    root = Path(tempfile.mkdtemp(prefix="ecny-sync-scale-", dir=os.environ.get("BENCH_DIR")))
    home = Home(root)
    dbs = st.Databases(root, args.postgres)
    out: dict[str, Any] = {"operator_db": "postgresql" if args.postgres else "sqlite", "cpu_count": os.cpu_count(),
                           "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        source = dbs.url("source")
        with operator(root, source) as (_, url):
            provision_terminal(home, st.TERMINAL, url)
            took = grow(home, url, sizes, root / "snapshots")
        out["generate_s"] = {str(n): round(s, 1) for n, s in took.items()}
        out["sizes"] = [measure(home, dbs, source, n, root / "snapshots" / str(n)) for n in sizes]
    finally:
        dbs.close()
        if args.keep:
            print(f"home kept at {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    if not all(s["checks"]["exactly_once"] for s in out["sizes"]):
        raise SystemExit("not every voucher was settled exactly once (see checks)")


if __name__ == "__main__":
    main()
