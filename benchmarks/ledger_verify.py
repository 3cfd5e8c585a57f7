"""Ledger verification on big ledgers: the full check (``pos ledger verify``) and the incremental check run before
every sync (:meth:`pos.ledger.Ledger.check`), on ledgers of 10k, 100k and 1M entries.

    .venv/bin/python benchmarks/ledger_verify.py [--sizes 10000,100000,1000000] [--new 100]

Each ledger is built through the public API, one transaction per 10k entries: pairs of an ``intent`` and the
``payment`` that closes it, with data the size of a real payment's (voucher, certificate fingerprints). Then:
the full verification (every entry re-hashed; an intact ledger's checkpoint moves to its end), ``--new`` more
payments (a day's takings since the last sync), and the pre-sync check (the prefix is checked against the sealed
checkpoint's fingerprint in SQL, only the new entries are re-hashed). Prints seconds and entries per second.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

from pos.ledger import Ledger
from wallet.ids import voucher_id

PER_TX = 10_000


def build(path: Path, n: int) -> Ledger:
    """A ledger of ``n`` entries (``n`` even): intent/payment pairs, one transaction per 10k entries."""
    led = Ledger(path)
    voucher = secrets.token_hex(120)
    cert, issuer = secrets.token_hex(32), secrets.token_hex(32)
    seq = 0
    while seq < n:
        with led.transaction() as tx:
            for _ in range(min(PER_TX, n - seq) // 2):
                intent = tx.append("intent", amount_fen=1234, data={"challenge": secrets.token_hex(8),
                                                                    "owner": "bench:1"})
                wallet = f"0991{intent.seq // 1000:012d}"
                counter = intent.seq % 1000 + 1
                tx.append("payment", voucher_id=voucher_id(wallet, counter), wallet_id=wallet, counter=counter,
                          amount_fen=1234, data={"voucher": voucher, "cert": cert, "issuer": issuer,
                                                 "intent": intent.seq})
                seq += 2
    return led


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--new", type=int, default=100, help="payments taken between two syncs")
    args = ap.parse_args()
    print(f"{'entries':>9} {'build s':>8} {'full verify s':>14} {'entries/s':>10} {'pre-sync check s':>17} "
          f"{'re-hashed':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="ledger-verify-") as tmp:
            t0 = time.perf_counter()
            led = build(Path(tmp) / "ledger.db", n)
            built = time.perf_counter() - t0
            t0 = time.perf_counter()
            full = led.verify(full=True)
            full_s = time.perf_counter() - t0
            with led.transaction() as tx:
                for i in range(args.new):
                    tx.append("payment", voucher_id=voucher_id("0992000000000000", i + 1),
                              wallet_id="0992000000000000", counter=i + 1, amount_fen=100, data={"n": i})
            t0 = time.perf_counter()
            check = led.check()
            check_s = time.perf_counter() - t0
            assert full.entries == n and full.rehashed == n and check.rehashed == args.new
            print(f"{n:>9,} {built:>8.1f} {full_s:>14.2f} {n / full_s:>10,.0f} {check_s:>17.3f} "
                  f"{check.rehashed:>10,}")
            led.close()


if __name__ == "__main__":
    main()
