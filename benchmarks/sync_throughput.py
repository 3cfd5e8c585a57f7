"""Sync throughput: 10,000 pending vouchers from one terminal to a fresh operator (SQLite, one worker process),
and the operator's ingest rate against the raw ECDSA P-256 verify ceiling measured in the same run.

    .venv/bin/python benchmarks/sync_throughput.py [--vouchers 10000] [--batch 500] [--postgres URL]

With ``--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test`` the operators keep their books on that server
instead (each in a schema of its own, dropped afterwards); the bar is stated for the embedded SQLite default.

Vouchers are signed directly with the cards' keys (as the card would) and recorded through the payment session's
own ledger code, instead of tapping 10,000 times. The operator runs as a separate process (``pos operator serve``).

Ingest starts a fresh operator on a copy of the database (terminals and wallets on file, no vouchers), waits until it
answers (it warms up before it listens) and times the upload the way the sync does it: binary batches, the first
alone, then two in flight. The bar is ingest over HTTP against the single-threaded raw verify rate. The operator
checks a batch's signatures on a few threads (the GIL is released while `cryptography` verifies), so the output also
gives the raw verify rate of two threads at once and the ingest rate against it: how much of the figure parallel
verification accounts for.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bank.verify import VERIFY_THREADS
from pos.cards.manage import issue_cards
from pos.home import Home
from pos.payment.session import PaymentSession
from pos.sync.client import OperatorClient, RetryPolicy, provision_terminal
from pos.sync.upload import PIPELINE_DEPTH, _batch, sync_once, upload_batches
from wallet.keys import key_from_pem
from wallet.voucher import CNY, Voucher, VoucherBody

TERMINAL = "CMGQ0001"
MERCHANT = "320508000000101"
PER_CARD = 10  # the offline count cap of a card between loads


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_operator(home: Path, db: str | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "pos.cli.main", "--home", str(home), "operator", "serve", "--port", str(port)]
    if db:
        cmd += ["--db", db]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ECNY_OPERATOR_FAULT": ""})
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(url + "/healthz", timeout=0.5)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("operator did not start")


def make_vouchers(home: Home, n: int, url: str) -> None:
    """Issue cards (registered with the operator), sign ``n`` vouchers with their keys, record them as payments."""
    cards = issue_cards(home, 4, 100_000, (n + PER_CARD - 1) // PER_CARD, operator_url=url)
    merchant, _ = home.terminal(TERMINAL)
    with home.ledger(TERMINAL) as ledger:
        session = PaymentSession(home.context(TERMINAL, ledger), reader=None)  # type: ignore[arg-type]
        # the payment names its intent: by entry (older sessions) or by sequence number
        takes_seq = "intent_seq" in inspect.signature(session._record).parameters
        intent = 0 if takes_seq else SimpleNamespace(seq=0)
        now = time.time_ns() // 1_000_000
        made = 0
        for card in cards:
            key = key_from_pem(card.key_pem.encode())
            balance = card.balance_fen
            for counter in range(1, PER_CARD + 1):
                if made == n:
                    return
                amount = 100 + made % 900
                balance -= amount
                body = VoucherBody(card.wallet_id, counter, amount, CNY, merchant.id, TERMINAL,
                                   secrets.token_bytes(16), now - 60_000 + made, balance)
                session._record(Voucher.sign(body, key), intent, card.cert_der, card.issuer_der)  # type: ignore
                made += 1


def verify_ceiling(home: Home, seconds: float = 2.0, threads: int = 1) -> float:
    """Raw ECDSA P-256 verifies per second over real voucher bodies: on one core (``threads=1``, the ceiling the
    bar is measured against), or with ``threads`` threads verifying at once (what parallel verification can reach
    on this machine: `cryptography` releases the GIL while it verifies)."""
    with home.ledger(TERMINAL) as ledger:
        entries = ledger.outbox(limit=500)
        samples = []
        for e in entries:
            v = Voucher.decode(bytes.fromhex(e.data["voucher"]))
            from wallet.certs import _parse

            key = _parse(ledger.certificate(e.data["cert"])).public_key()
            sig = encode_dss_signature(int.from_bytes(v.signature[:32], "big"), int.from_bytes(v.signature[32:], "big"))
            samples.append((key, sig, v.body.encode()))
    algo = ec.ECDSA(hashes.SHA256())
    counts = [0] * threads
    start = threading.Barrier(threads + 1)

    def run(k: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for key, sig, data in samples:
                key.verify(sig, data, algo)
            counts[k] += len(samples)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


def ingest(home: Home, url: str, batch: int) -> tuple[int, float]:
    """Post the outbox straight to a fresh operator the way the terminal's sync does (binary batches, the first
    alone, then two in flight); time the encoding and the requests, not the reading of the ledger."""
    with home.ledger(TERMINAL) as ledger:
        outbox = ledger.outbox()
        certs = {fp: ledger.certificate(fp) for e in outbox for fp in (e.data["cert"], e.data["issuer"])}
        chunks = [outbox[i:i + batch] for i in range(0, len(outbox), batch)]
        settled = 0
        with OperatorClient.for_terminal(home, TERMINAL, url, retry=RetryPolicy(attempts=1), timeout=120) as cli:
            t0 = time.perf_counter()
            for _, answer in upload_batches(cli, chunks, lambda c: _batch(ledger, c, certs)):  # type: ignore[arg-type]
                settled += sum(r["status"] == "settled" for r in answer["results"])
            elapsed = time.perf_counter() - t0
    return settled, elapsed


class Databases:
    """The operators' databases: SQLite files under the home, or schemas on a PostgreSQL server."""

    def __init__(self, root: Path, postgres: str | None) -> None:
        self.root, self.postgres = root, postgres
        self.schemas: list[str] = []
        self._admin = None
        if postgres:
            import psycopg

            self._admin = psycopg.connect(postgres.replace("+psycopg", ""), autocommit=True)

    def url(self, name: str) -> str:
        """A new empty database ``name``."""
        if self._admin is None:
            (self.root / "operator").mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{self.root / 'operator' / f'{name}.db'}"
        schema = f"ecny_bench_{name}_{secrets.token_hex(4)}"
        self._admin.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        sep = "&" if "?" in self.postgres else "?"  # type: ignore[operator]
        return f"{self.postgres}{sep}options=-csearch_path%3D{schema}"

    def copy(self, source: str, target: str) -> None:
        """Make ``target`` a copy of ``source`` (both from :meth:`url`)."""
        if self._admin is None:
            with sqlite3.connect(source.removeprefix("sqlite:///")) as src, \
                    sqlite3.connect(target.removeprefix("sqlite:///")) as dst:
                src.backup(dst)
            return
        from bank.schema import make_engine, metadata

        make_engine(target).dispose()  # the schema's tables and constraints
        src, dst = (url.rsplit("%3D", 1)[1] for url in (source, target))
        for table in metadata.sorted_tables:
            self._admin.execute(f'INSERT INTO "{dst}"."{table.name}" SELECT * FROM "{src}"."{table.name}"')

    def close(self) -> None:
        if self._admin is not None:
            for schema in self.schemas:
                self._admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            self._admin.close()


def ingest_in_process(home: Home, db: str, batch: int) -> tuple[int, float]:
    """The operator's settlement core alone (no HTTP): the same batches through :meth:`Operator.settle`."""
    from bank.auth import TerminalRecord
    from bank.service import Operator
    from pos.composition import operator_settings
    from wire.batch import UploadItem

    with home.ledger(TERMINAL) as ledger:
        outbox = ledger.outbox()
        ders = {fp: ledger.certificate(fp) for e in outbox for fp in (e.data["cert"], e.data["issuer"])}
    batches = [[UploadItem(bytes.fromhex(e.data["voucher"]), ders[e.data["cert"]], ders[e.data["issuer"]])
                for e in outbox[i:i + batch]] for i in range(0, len(outbox), batch)]
    op = Operator.from_settings(operator_settings(home, db))
    try:
        op.warm_up()  # as `pos operator serve` does before it listens
        term = TerminalRecord(TERMINAL, MERCHANT)
        t0 = time.perf_counter()
        settled = sum(r["status"] == "settled" for b in batches for r in op.settle(term, b))
        return settled, time.perf_counter() - t0
    finally:
        op.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vouchers", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--postgres", metavar="URL", help="keep the operators' books on this PostgreSQL server")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecny-bench-"))
    home = Home(root)
    dbs = Databases(root, args.postgres)
    db1 = dbs.url("operator")
    proc, url = start_operator(root, db1)
    procs = [proc]
    try:
        provision_terminal(home, TERMINAL, url)
        t0 = time.perf_counter()
        make_vouchers(home, args.vouchers, url)
        gen_s = time.perf_counter() - t0
        ceiling = verify_ceiling(home)
        ceiling_2t = verify_ceiling(home, threads=2)

        # 1. ingest: the same vouchers posted straight to a second operator whose database is a copy of the first
        #    one before any settlement (same terminals and wallets on file, no vouchers)
        db2, db3 = dbs.url("ingest"), dbs.url("core")
        for target in (db2, db3):
            dbs.copy(db1, target)
        proc2, url2 = start_operator(root, db2)
        procs.append(proc2)
        settled_i, ingest_s = ingest(home, url2, args.batch)
        settled_c, core_s = ingest_in_process(home, db3, args.batch)

        # 2. the terminal's full sync (outbox -> operator -> ledger entries -> denylist) to the first operator
        t0 = time.perf_counter()
        result = sync_once(home, TERMINAL, url, batch_size=args.batch)
        sync_s = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        dbs.close()
    ingest_rate = settled_i / ingest_s
    out = {
        "vouchers": args.vouchers, "batch": args.batch, "cpu_count": os.cpu_count(),
        "operator_db": "postgresql" if args.postgres else "sqlite",
        "generate_s": round(gen_s, 2),
        "sync": {"wall_s": round(sync_s, 2), "vouchers_per_s": round(result.settled / sync_s),
                 "settled": result.settled, "pending": result.pending},
        "ingest": {"wall_s": round(ingest_s, 2), "vouchers_per_s": round(ingest_rate), "settled": settled_i},
        "ingest_core_no_http": {"wall_s": round(core_s, 2), "vouchers_per_s": round(settled_c / core_s),
                                "vs_ceiling": round(settled_c / core_s / ceiling, 3),
                                "vs_ceiling_2_threads": round(settled_c / core_s / ceiling_2t, 3)},
        "ecdsa_p256_verify_ceiling_per_s": round(ceiling),
        "ingest_vs_ceiling": round(ingest_rate / ceiling, 3),
        "bar_50_percent_met": ingest_rate >= 0.5 * ceiling,
        # the same raw verify loop on two threads at once: what parallel verification contributes on this machine
        "ecdsa_p256_verify_ceiling_2_threads_per_s": round(ceiling_2t),
        "ingest_vs_ceiling_2_threads": round(ingest_rate / ceiling_2t, 3),
        "operator_verify_threads": VERIFY_THREADS,
        "sync_pipeline_depth": PIPELINE_DEPTH,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
