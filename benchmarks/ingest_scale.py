"""Operator ingest against the size of its settled history, as ratios of interleaved runs.

    .venv/bin/python benchmarks/ingest_scale.py [--stored 1000000] [--vouchers 4000] [--rounds 5]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Two operators (``pos operator serve``, one worker each, SQLite files or PostgreSQL schemas of their own, dropped
afterwards) start from copies of one database with the terminal and the wallets on file; one of them also holds
``--stored`` settled vouchers of 100,000 other wallets over 1,000 terminals and 30 days, written in bulk (their
rows as settlement writes them, with random voucher bytes: nothing reads them back but the indexes) and ANALYZEd.
The same fresh outbox (real vouchers, signed with the cards' keys, see benchmarks/sync_throughput.py) is then
posted to both in ``--rounds`` rounds of ``--vouchers``, the way the terminal syncs (binary batches of 500, two in
flight), alternating which operator goes first, so both see the same machine. The bar (issue 14): ingest with the
history at least 1/1.5 of the empty database's rate, i.e. the time within 1.5x. ``--explain`` prints the plans of
the settlement path's lookups against the big database.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sync_throughput as st

from pos.home import Home
from pos.sync.client import OperatorClient, RetryPolicy, provision_terminal
from pos.sync.upload import _batch, upload_batches

HISTORY_WALLETS = 100_000
HISTORY_TERMINALS = 1000
HISTORY_DAYS = 30
COLUMNS = ("voucher_id", "wallet_id", "counter", "body_hash", "voucher", "amount_fen", "fee_fen", "refunded_fen",
           "merchant_id", "terminal_id", "timestamp_ms", "day", "settled_ms")


def history_rows(n: int, start: int = 0) -> list[tuple[object, ...]]:
    """Rows ``start`` to ``start + n`` of the settled history."""
    rows = []
    t0 = 1_780_000_000_000
    voucher = secrets.token_bytes(170)
    for i in range(start, start + n):
        w = i % HISTORY_WALLETS
        counter = i // HISTORY_WALLETS + 1
        wallet = f"0993{w:012d}"
        day = i * HISTORY_DAYS // 10**7 % HISTORY_DAYS + 1
        ts = t0 + day * 86_400_000 + i % 86_400_000
        rows.append((f"{wallet}-{counter:08d}", wallet, counter, secrets.token_hex(32), voucher, 1234, 0, 0,
                     f"9{i % HISTORY_TERMINALS // 10:014d}", f"FC{i % HISTORY_TERMINALS + 1:06d}", ts,
                     f"2026-06-{day:02d}", ts + 3_600_000))
    return rows


def wallet_rows() -> list[tuple[object, ...]]:
    return [(f"0993{w:012d}", 1, b"", 10**9, 0, 0, 0, "active", None, 1_780_000_000_000)
            for w in range(HISTORY_WALLETS)]


def store_history(dbs: st.Databases, url: str, n: int) -> float:
    """Write ``n`` settled vouchers (and their wallets) into the database at ``url`` in bulk; ANALYZE it."""
    t0 = time.perf_counter()
    chunk = 100_000
    wcols = ("wallet_id", "tier", "cert_der", "loaded_fen", "spent_fen", "online_fen", "load_counter", "status",
             "revoked_reason", "created_ms")
    if dbs.postgres is None:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO wallets ({','.join(wcols)}) VALUES ({','.join('?' * len(wcols))})",
                         wallet_rows())
        for start in range(0, n, chunk):
            conn.executemany(f"INSERT INTO vouchers ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                             history_rows(min(chunk, n - start), start))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
        return time.perf_counter() - t0
    schema = url.rsplit("%3D", 1)[1]
    admin = dbs._admin
    assert admin is not None
    with admin.cursor().copy(f'COPY "{schema}".wallets ({",".join(wcols)}) FROM STDIN') as copy:
        for row in wallet_rows():
            copy.write_row(row)
    for start in range(0, n, chunk):
        with admin.cursor().copy(f'COPY "{schema}".vouchers ({",".join(COLUMNS)}) FROM STDIN') as copy:
            for row in history_rows(min(chunk, n - start), start):
                copy.write_row(row)
    admin.execute(f'ANALYZE "{schema}".vouchers')
    admin.execute(f'ANALYZE "{schema}".wallets')
    return time.perf_counter() - t0


def analyze(dbs: st.Databases, url: str) -> None:
    if dbs.postgres is None:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("ANALYZE")
        return
    assert dbs._admin is not None
    schema = url.rsplit("%3D", 1)[1]
    for table in ("vouchers", "wallets"):
        dbs._admin.execute(f'ANALYZE "{schema}".{table}')


def explain(dbs: st.Databases, url: str) -> None:
    """The plans of the settlement path's per-batch lookups on the database at ``url``."""
    queries = {
        "settled bodies": "SELECT voucher_id, body_hash FROM vouchers WHERE voucher_id IN "
                          "('0993000000000001-00000001')",
        "daily totals": "SELECT wallet_id, day, sum(amount_fen) FROM vouchers WHERE wallet_id IN ('0993000000000001')"
                        " AND day IN ('2026-06-03') GROUP BY wallet_id, day",
        "wallet rows": "SELECT wallet_id, loaded_fen, spent_fen, status FROM wallets WHERE wallet_id IN "
                       "('0993000000000001')",
        "spent before": "SELECT coalesce(sum(amount_fen), 0) FROM vouchers WHERE wallet_id = '0993000000000001' "
                        "AND counter < 5",
        "report": "SELECT voucher_id, amount_fen FROM vouchers WHERE terminal_id = 'FC000001' AND day = '2026-06-03'",
    }
    for name, q in queries.items():
        if dbs.postgres is None:
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                plan = "; ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q))
        else:
            assert dbs._admin is not None
            schema = url.rsplit("%3D", 1)[1]
            dbs._admin.execute(f'SET search_path TO "{schema}"')
            plan = "; ".join(r[0] for r in dbs._admin.execute("EXPLAIN " + q)).replace("  ", "")
            dbs._admin.execute("SET search_path TO DEFAULT")
        print(f"  {name}: {plan}")


def post(home: Home, url: str, bodies: list[bytes]) -> tuple[int, float]:
    """Post the batches the way the sync does (the first alone, then two in flight)."""
    settled = 0
    with OperatorClient.for_terminal(home, st.TERMINAL, url, retry=RetryPolicy(attempts=1), timeout=300) as cli:
        t0 = time.perf_counter()
        for _, answer in upload_batches(cli, [[b] for b in bodies], lambda c: c[0]):  # type: ignore[arg-type,return-value]
            settled += sum(r["status"] == "settled" for r in answer["results"])
        return settled, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stored", type=int, default=1_000_000)
    ap.add_argument("--vouchers", type=int, default=4000, help="vouchers per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--postgres", metavar="URL")
    ap.add_argument("--explain", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecny-ingest-scale-", dir=os.environ.get("BENCH_DIR")))
    home = Home(root)
    dbs = st.Databases(root, args.postgres)
    procs = []
    out: dict[str, object] = {"database": "postgresql" if args.postgres else "sqlite", "stored": args.stored,
                              "vouchers_per_round": args.vouchers, "rounds": args.rounds}
    try:
        source = dbs.url("source")
        proc, url = st.start_operator(root, source)
        procs.append(proc)
        provision_terminal(home, st.TERMINAL, url)
        st.make_vouchers(home, args.vouchers * args.rounds, url)
        proc.terminate()
        proc.wait(15)
        empty, full = dbs.url("empty"), dbs.url("history")
        dbs.copy(source, empty)
        dbs.copy(source, full)
        out["history_written_s"] = round(store_history(dbs, full, args.stored), 1)
        analyze(dbs, empty)
        if args.explain:
            print(f"plans with {args.stored:,} settled vouchers ({out['database']}):")
            explain(dbs, full)
        with home.ledger(st.TERMINAL) as ledger:
            outbox = ledger.outbox()
            certs = {fp: ledger.certificate(fp) for e in outbox for fp in (e.data["cert"], e.data["issuer"])}
            bodies = [_batch(ledger, outbox[i:i + args.batch], certs) for i in range(0, len(outbox), args.batch)]
        per_round = len(bodies) // args.rounds
        operators = {}
        for name, db in (("empty", empty), ("history", full)):
            p, u = st.start_operator(root, db)
            procs.append(p)
            operators[name] = u
        rates: dict[str, list[float]] = {"empty": [], "history": []}
        for r in range(args.rounds):
            order = ["empty", "history"] if r % 2 == 0 else ["history", "empty"]
            for name in order:
                settled, secs = post(home, operators[name], bodies[r * per_round:(r + 1) * per_round])
                assert settled == per_round * args.batch, (name, settled)
                rates[name].append(settled / secs)
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        dbs.close()
    ratios = [h / e for h, e in zip(rates["history"], rates["empty"], strict=True)]
    out["ingest_empty_per_s"] = [round(x) for x in rates["empty"]]
    out["ingest_history_per_s"] = [round(x) for x in rates["history"]]
    out["history_vs_empty_per_round"] = [round(x, 3) for x in ratios]
    out["history_vs_empty_median"] = round(statistics.median(ratios), 3)
    out["bar_within_1_5x"] = statistics.median(ratios) >= 1 / 1.5
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
