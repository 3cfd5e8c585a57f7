"""The operator's reconciliation on big books: the back office's full scan (``GET /v1/admin/reconciliation``) and a
terminal's report (``POST /v1/reconciliation``), on 10k, 100k and 1M settled vouchers.

    .venv/bin/python benchmarks/reconcile_scan.py [--sizes 10000,100000,1000000] [--per-wallet 20]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

The books are written straight into the operator's tables (settlement is measured by sync_throughput.py): wallets
of ``--per-wallet`` payments each whose balances chain, one payment in a hundred missing (a gap), one wallet in a
thousand with a balance that does not chain, and one reported unresolved charge per gap for one terminal. Vouchers
carry a dummy signature (reconciliation decodes them, it does not verify them). Prints seconds and vouchers/s of
the full scan, and the seconds of one terminal's report of 10 charges.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

from sqlalchemy import Connection, insert, text

from bank.auth import TerminalRecord
from bank.reconcile import Reconciler
from bank.schema import make_engine, vouchers, wallets
from bank.store import Store
from wallet.ids import voucher_id
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.models import UnresolvedItem

TID, MERCHANT = "CMGQ0001", "320508000000101"


def build(url: str, n: int, per_wallet: int) -> tuple[Store, list[UnresolvedItem]]:
    engine = make_engine(url)
    wallet_rows: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []
    reports: list[UnresolvedItem] = []

    def flush(conn: Connection) -> None:
        for table, batch in ((wallets, wallet_rows), (vouchers, rows)):
            if batch:
                conn.execute(insert(table), batch)
                batch.clear()

    conn = engine.connect()
    for w in range(n // per_wallet):
        wid = f"0991{w:012d}"
        balance = 1_000_000
        wallet_rows.append({"wallet_id": wid, "tier": 4, "cert_der": b"", "loaded_fen": balance, "spent_fen": 0,
                            "online_fen": 0, "load_counter": 0, "status": "active", "created_ms": 0})
        for c in range(1, per_wallet + 1):
            amount = 100 + c
            balance -= amount
            if w % 1000 == 7 and c == 5:
                balance -= 1  # a balance that does not chain
            if (w * per_wallet + c) % 100 == 50:  # missing: a gap, reported by the terminal
                if len(reports) < 10:
                    reports.append(UnresolvedItem(intent=len(reports) + 1, state="unresolved", wallet_id=wid,
                                                  counter=c, amount_fen=amount, challenge=secrets.token_hex(16)))
                continue
            body = VoucherBody(wallet_id=wid, counter=c, amount_fen=amount, currency=CNY, merchant_id=MERCHANT,
                               terminal_id=TID, challenge=secrets.token_bytes(16), timestamp_ms=1_700_000_000_000,
                               balance_after_fen=balance)
            rows.append({"voucher_id": voucher_id(wid, c), "wallet_id": wid, "counter": c, "body_hash": "0" * 64,
                         "voucher": Voucher(body, b"\0" * 64).encode(), "amount_fen": amount, "fee_fen": 0,
                         "refunded_fen": 0, "merchant_id": MERCHANT, "terminal_id": TID,
                         "timestamp_ms": 1_700_000_000_000, "day": "2023-11-15", "settled_ms": 0})
        if len(rows) >= 10_000:
            with conn.begin():
                flush(conn)
    with conn.begin():
        flush(conn)
    conn.close()
    return Store(engine), reports


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--per-wallet", type=int, default=20)
    ap.add_argument("--postgres", help="a PostgreSQL URL (a schema of its own is made and dropped per size)")
    args = ap.parse_args()
    print(f"{'vouchers':>9} {'wallets':>8} {'gaps':>6} {'breaks':>7} {'full scan s':>12} {'vouchers/s':>11} "
          f"{'report s':>9}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="reconcile-") as tmp:
            url, schema = f"sqlite:///{Path(tmp) / 'operator.db'}", None
            if args.postgres:
                schema = f"bench_{secrets.token_hex(4)}"
                admin = make_engine(args.postgres)
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            store, reports = build(url, n, args.per_wallet)
            rec = Reconciler(store)
            t0 = time.perf_counter()
            view = rec.view()
            scan_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec.report(TerminalRecord(TID, MERCHANT), reports)
            report_s = time.perf_counter() - t0
            print(f"{view.vouchers:>9,} {view.wallets:>8,} {view.gaps_total:>6,} {view.breaks_total:>7,} "
                  f"{scan_s:>12.2f} {view.vouchers / scan_s:>11,.0f} {report_s:>9.3f}")
            store.engine.dispose()
            if schema:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()


if __name__ == "__main__":
    main()
