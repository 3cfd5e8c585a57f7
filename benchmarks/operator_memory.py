"""The operator's memory against the number of wallets it has settled vouchers from.

    .venv/bin/python benchmarks/operator_memory.py [--wallets 20000] [--per-wallet 3] [--step 2000]
        [--batch 500] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Starts an operator (``pos operator serve``, one worker, SQLite in a fresh home or a schema of its own on
``--postgres``, dropped afterwards), issues ``--wallets`` cards and registers them in batches on the operator's
database in-process (as the fleet simulator does), then settles ``--per-wallet`` vouchers of every wallet over HTTP,
``--step`` wallets at a time, the way a terminal syncs (binary batches, the first alone, then two in flight; see
benchmarks/sync_throughput.py and benchmarks/ingest_scale.py, whose helpers this reuses). The vouchers of a step
come from wallets the operator has not seen before. After each step it reads the operator process's resident
memory (``VmRSS``) and its peak (``VmHWM``) from ``/proc/PID/status`` and prints the growth per 1,000 wallets: what
a long-running operator's memory does as the wallets it has seen add up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import ingest_scale
import sync_throughput as st
from cryptography.hazmat.primitives.asymmetric import ec

from pos.fleet.books import back_office, register_all
from pos.fleet.plan import wallet_id
from pos.home import Home
from pos.sync.client import provision_terminal
from wallet.keys import new_key
from wallet.pki import cert_der
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.batch import encode_batch

OPENING_FEN = 100_000
TIER = 1

Card = tuple[str, ec.EllipticCurvePrivateKey, bytes]  # wallet id, the card's key, its certificate (DER)


def status_mb(pid: int, field: str) -> float:
    """``field`` (``VmRSS`` or ``VmHWM``) of process ``pid`` and its children, in MB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total / 1024


def issue(home: Home, db: str, url: str, n: int) -> list[Card]:
    """``n`` cards (wallet id, key, certificate) with consecutive ids from a random start, registered on the
    operator's database in batches."""
    ca = home.pki.wallet_ca
    base = random.randrange(10**10)
    cards = []
    for w in range(n):
        key = new_key()
        wid = wallet_id(base, w)
        cards.append((wid, key, cert_der(ca.issue_wallet_cert(wid, TIER, key.public_key()))))
    with back_office(home, url, True, db) as office:
        register_all(office, ((wid, TIER, der, OPENING_FEN) for wid, _, der in cards))
    return cards


def bodies(cards: list[Card], issuer: bytes, merchant_id: str, per_wallet: int,
           batch: int) -> list[bytes]:
    """The binary batches of ``per_wallet`` vouchers from each card, the cards' vouchers in turn."""
    now = time.time_ns() // 1_000_000
    vouchers: list[tuple[bytes, bytes]] = []
    balances = [OPENING_FEN] * len(cards)
    for counter in range(1, per_wallet + 1):
        for k, (wid, key, der) in enumerate(cards):
            amount = 100 + (k * 7 + counter) % 900
            balances[k] -= amount
            body = VoucherBody(wid, counter, amount, CNY, merchant_id, st.TERMINAL, secrets.token_bytes(16),
                               now - 1000, balances[k])
            vouchers.append((Voucher.sign(body, key).encode(), der))
    out = []
    for i in range(0, len(vouchers), batch):
        ders = [issuer]
        index: dict[bytes, int] = {}
        items = []
        for raw, der in vouchers[i:i + batch]:
            if der not in index:
                index[der] = len(ders)
                ders.append(der)
            items.append((raw, index[der], 0))
        out.append(encode_batch(ders, items))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wallets", type=int, default=20_000)
    ap.add_argument("--per-wallet", type=int, default=3, help="vouchers settled from each wallet")
    ap.add_argument("--step", type=int, default=2000, help="wallets settled between two readings")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--postgres", metavar="URL", help="keep the operator's books on this PostgreSQL server")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecny-operator-memory-", dir=os.environ.get("BENCH_DIR")))
    home = Home(root)
    dbs = st.Databases(root, args.postgres)
    steps: list[dict[str, Any]] = []
    try:
        db = dbs.url("operator")
        proc, url = st.start_operator(root, db)
        try:
            provision_terminal(home, st.TERMINAL, url)
            merchant, _ = home.terminal(st.TERMINAL)
            t0 = time.perf_counter()
            cards = issue(home, db, url, args.wallets)
            issue_s = time.perf_counter() - t0
            issuer = cert_der(home.pki.wallet_ca.cert)
            before = status_mb(proc.pid, "VmRSS")
            settled = 0
            settle_s = 0.0
            for start in range(0, len(cards), args.step):
                chunk = cards[start:start + args.step]
                posted = bodies(chunk, issuer, merchant.id, args.per_wallet, args.batch)
                n, secs = ingest_scale.post(home, url, posted)
                assert n == len(chunk) * args.per_wallet, (n, len(chunk))
                settled += n
                settle_s += secs
                rss = status_mb(proc.pid, "VmRSS")
                prev_rss, prev_wallets = (steps[-1]["rss_mb"], steps[-1]["wallets"]) if steps else (before, 0)
                steps.append({"wallets": start + len(chunk), "settled": settled, "rss_mb": round(rss, 1),
                              "hwm_mb": round(status_mb(proc.pid, "VmHWM"), 1),
                              "mb_per_1000_wallets": round((rss - prev_rss) / (start + len(chunk) - prev_wallets)
                                                           * 1000, 2),
                              "vouchers_per_s": round(n / secs)})
                last = steps[-1]
                print(f"  {last['wallets']:>7,} wallets  {settled:>8,} settled  RSS {last['rss_mb']:7.1f} MB"
                      f"  peak {last['hwm_mb']:7.1f} MB  {last['mb_per_1000_wallets']:+6.2f} MB per 1,000 wallets"
                      f"  {last['vouchers_per_s']:>6,} vouchers/s", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(15)
    finally:
        dbs.close()
    half = steps[(len(steps) - 1) // 2]
    last = steps[-1]
    out = {
        "database": "postgresql" if args.postgres else "sqlite", "wallets": args.wallets,
        "per_wallet": args.per_wallet, "step": args.step, "batch": args.batch, "issue_s": round(issue_s, 1),
        "rss_before_mb": round(before, 1), "steps": steps,
        # the first steps also fill the operator's fixed caches (wallet.certs keeps 8,192 certificates): the
        # growth that goes on is read over the second half of the run
        "growth_mb_per_1000_wallets_second_half": round((last["rss_mb"] - half["rss_mb"])
                                                        / (last["wallets"] - half["wallets"]) * 1000, 2)
        if last is not half else None,
        "peak_rss_mb": last["hwm_mb"], "vouchers_per_s": round(settled / settle_s),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
