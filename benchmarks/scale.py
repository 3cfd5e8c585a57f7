"""Operator scale: ingest over HTTP with 1 and 2 worker processes (``pos operator serve --workers K``) on
PostgreSQL, against the raw ECDSA P-256 verify ceiling measured in the same run.

    .venv/bin/python benchmarks/scale.py [--vouchers 4000] [--batch 500] [--streams 4]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

The vouchers are made once (as benchmarks/sync_throughput.py does: signed with the cards' keys, recorded in one
terminal's ledger); each worker count gets a fresh copy of the database with the terminals and wallets on file and
no vouchers, and the outbox is posted by ``--streams`` clients at once (several terminals syncing together), binary
batches as the terminal sends them. The bar of issue 14: two workers at least 1.3x one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sync_throughput as st

from pos.home import Home
from pos.sync.client import OperatorClient, RetryPolicy, provision_terminal
from pos.sync.upload import _batch


def start(home: Path, db: str, workers: int) -> tuple[object, str]:
    import subprocess

    port = st.free_port()
    cmd = [sys.executable, "-m", "pos.cli.main", "--home", str(home), "operator", "serve", "--port", str(port),
           "--db", db, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            import httpx

            httpx.get(url + "/healthz", timeout=0.5)
            time.sleep(3 if workers > 1 else 0)  # let every worker finish its warm-up
            return proc, url
        except Exception:
            time.sleep(0.05)
    raise SystemExit("operator did not start")


def ingest_streams(home: Home, url: str, batch: int, streams: int) -> tuple[int, float]:
    with home.ledger(st.TERMINAL) as ledger:
        outbox = ledger.outbox()
        certs = {fp: ledger.certificate(fp) for e in outbox for fp in (e.data["cert"], e.data["issuer"])}
        bodies = [_batch(ledger, outbox[i:i + batch], certs) for i in range(0, len(outbox), batch)]
    settled = [0] * streams

    def run(k: int) -> None:
        with OperatorClient.for_terminal(home, st.TERMINAL, url, retry=RetryPolicy(attempts=1), timeout=300) as cli:
            for body in bodies[k::streams]:
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
    ap.add_argument("--vouchers", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecny-scale-"))
    home = Home(root)
    dbs = st.Databases(root, args.postgres)
    db1 = dbs.url("source")
    procs = []
    out: dict[str, object] = {"vouchers": args.vouchers, "batch": args.batch, "streams": args.streams,
                              "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    try:
        proc, url = start(root, db1, 1)
        procs.append(proc)
        provision_terminal(home, st.TERMINAL, url)
        st.make_vouchers(home, args.vouchers, url)
        out["verify_ceiling_per_s"] = round(st.verify_ceiling(home))
        out["verify_ceiling_2_threads_per_s"] = round(st.verify_ceiling(home, threads=2))
        for workers in (1, 2):
            db = dbs.url(f"w{workers}")
            dbs.copy(db1, db)
            p, u = start(root, db, workers)
            procs.append(p)
            settled, secs = ingest_streams(home, u, args.batch, args.streams)
            out[f"ingest_{workers}_workers"] = {"settled": settled, "wall_s": round(secs, 2),
                                                "vouchers_per_s": round(settled / secs)}
    finally:
        for p in procs:
            p.terminate()  # type: ignore[attr-defined]
            p.wait(15)  # type: ignore[attr-defined]
        dbs.close()
    one = out["ingest_1_workers"]["vouchers_per_s"]  # type: ignore[index]
    two = out["ingest_2_workers"]["vouchers_per_s"]  # type: ignore[index]
    out["two_vs_one"] = round(two / one, 2)
    out["ingest_1_vs_ceiling"] = round(one / out["verify_ceiling_per_s"], 3)  # type: ignore[operator]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
