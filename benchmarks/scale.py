"""Operator scale: ingest over HTTP with 1 and 2 worker processes (``pos operator serve --workers K``) on
PostgreSQL, in interleaved rounds, against the raw ECDSA P-256 verify ceiling measured in the same run.

    .venv/bin/python benchmarks/scale.py [--vouchers 120000] [--rounds 3] [--batch 500] [--streams 16]
        [--per-sync 1] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

The vouchers are made once (as benchmarks/sync_throughput.py does: signed with the cards' keys, recorded in one
terminal's ledger). Two operators run side by side, one worker and two workers, each on its own copy of the database
(a schema of its own, dropped afterwards) with the terminal and the wallets on file and no vouchers. The outbox is
cut into ``--rounds`` rounds and a first one that warms both up and is not counted; each round is posted to both
operators in turn (which goes first alternates) by ``--streams`` terminals syncing at once, binary batches as the
terminal sends them, each terminal's sync on a connection of its own (``--per-sync`` batches per connection, as
`pos sync` opens one per sync; 0 keeps one connection per stream for the whole round). The bar of issue 14: two
workers at least 1.3x one, taken as the median of the rounds' ratios. It needs the machine's two cores free of other
work: a second worker has nothing to gain when they are busy.

The output also splits the CPU time of each counted round per voucher between the operator's processes, PostgreSQL
and the posting clients (this process), beside the wall time per voucher: how much of the two cores each
configuration keeps busy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

import sync_throughput as st

from pos.home import Home
from pos.sync.client import OperatorClient, RetryPolicy, provision_terminal
from pos.sync.upload import _batch


def start(home: Path, db: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = st.free_port()
    cmd = [sys.executable, "-m", "pos.cli.main", "--home", str(home), "operator", "serve", "--port", str(port),
           "--db", db, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            httpx.get(url + "/healthz", timeout=0.5)
            time.sleep(3 if workers > 1 else 0)  # let every worker finish its warm-up
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("operator did not start")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...


def cpu_split(operator: int) -> dict[str, float]:
    """CPU seconds so far of the operator's processes (the supervisor and its workers), of every PostgreSQL process
    and of this process (the posting clients)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    postgres: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        spent[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                postgres.add(pid)
        except OSError:
            pass
    tree = {operator}
    for _ in range(3):
        tree |= {pid for pid, parent in parents.items() if parent in tree}
    times = os.times()
    return {"operator": sum(spent[p] for p in tree if p in spent), "postgres": sum(spent[p] for p in postgres),
            "clients": times.user + times.system}


def ingest_streams(home: Home, url: str, bodies: list[bytes], streams: int, per_sync: int) -> tuple[int, float]:
    """Post ``bodies`` by ``streams`` clients at once, each opening a new connection every ``per_sync`` bodies
    (0: one connection for all); (settled, seconds)."""
    settled = [0] * streams

    def run(k: int) -> None:
        mine = bodies[k::streams]
        step = per_sync or len(mine)
        for i in range(0, len(mine), step):
            with OperatorClient.for_terminal(home, st.TERMINAL, url, retry=RetryPolicy(attempts=1),
                                             timeout=300) as cli:
                for body in mine[i:i + step]:
                    answer = cli.settle_batch(body)
                    settled[k] += sum(r.status == "settled" for r in answer.results)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(settled), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vouchers", type=int, default=120_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--per-sync", type=int, default=1)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecny-scale-"))
    home = Home(root)
    dbs = st.Databases(root, args.postgres)
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, object] = {"vouchers": args.vouchers, "rounds": args.rounds, "batch": args.batch,
                              "streams": args.streams, "cpu_count": os.cpu_count(),
                              "load_average_before": [round(x, 1) for x in os.getloadavg()]}
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, dict[str, float]] = {1: {}, 2: {}}  # CPU seconds per counted round's voucher, by process group
    try:
        source = dbs.url("source")
        proc, url = start(root, source, 1)
        procs.append(proc)
        provision_terminal(home, st.TERMINAL, url)
        st.make_vouchers(home, args.vouchers, url)
        out["verify_ceiling_per_s"] = round(st.verify_ceiling(home))
        out["verify_ceiling_2_threads_per_s"] = round(st.verify_ceiling(home, threads=2))
        with home.ledger(st.TERMINAL) as ledger:
            outbox = ledger.outbox()
            certs = {fp: ledger.certificate(fp) for e in outbox for fp in (e.data["cert"], e.data["issuer"])}
            bodies = [_batch(ledger, outbox[i:i + args.batch], certs) for i in range(0, len(outbox), args.batch)]
        urls = {}
        pids = {}
        for workers in (1, 2):
            db = dbs.url(f"w{workers}")
            dbs.copy(source, db)
            p, urls[workers] = start(root, db, workers)
            pids[workers] = p.pid
            procs.append(p)
        per_round = len(bodies) // (args.rounds + 1)
        for r in range(args.rounds + 1):  # round 0 warms both operators up (first connections, caches): not counted
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                before = cpu_split(pids[workers])
                settled, secs = ingest_streams(home, urls[workers], bodies[r * per_round:(r + 1) * per_round],
                                               args.streams, args.per_sync)
                after = cpu_split(pids[workers])
                if r:
                    rates[workers].append(settled / secs)
                    for group, seconds in after.items():
                        cpu[workers][group] = cpu[workers].get(group, 0.0) + (seconds - before[group]) / settled
                    cpu[workers]["wall"] = cpu[workers].get("wall", 0.0) + secs / settled
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        dbs.close()
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    out["ingest_1_worker_per_s"] = [round(x) for x in rates[1]]
    out["ingest_2_workers_per_s"] = [round(x) for x in rates[2]]
    out["two_vs_one_per_round"] = [round(x, 2) for x in ratios]
    out["two_vs_one_median"] = round(statistics.median(ratios), 2)
    out["ingest_1_vs_ceiling"] = round(statistics.median(rates[1]) / out["verify_ceiling_per_s"], 3)  # type: ignore
    for workers, split in cpu.items():  # microseconds per voucher, averaged over the counted rounds
        out[f"cpu_us_per_voucher_{workers}_worker"] = {g: round(v / args.rounds * 1e6) for g, v in split.items()}
    out["bar_two_workers_1_3x"] = statistics.median(ratios) >= 1.3
    out["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
