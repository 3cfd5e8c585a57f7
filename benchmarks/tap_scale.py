"""Tap latency against the size of the terminal's ledger and its open intents, as ratios of interleaved runs.

    .venv/bin/python benchmarks/tap_scale.py [--entries 1000000] [--intents 100] [--taps 2000] [--keep DIR]

Four terminals' ledgers in one process: an empty one, one of ``--entries`` entries (a terminal's long history: for
every tap an intent, its payment and the payment's settlement, a card certificate for every new wallet), and two
empty ones with ``--intents`` open intents: torn by other wallets (customers who left mid-PAY and never came back:
each tap looks at them and passes) and orphans of a process of an earlier boot (undecidable: each tap asks its card
about them, one RECOVER APDU). The big ledger is built through the ledger's own sealing code (every entry chained
and the head sealed, transactions of 10,000 entries in one batch, see :mod:`pos.ledger.batch`); ``--keep DIR``
keeps it there and reuses it on the next run.

The taps are interleaved (each round taps every ledger once, in a rotating order, a fresh card each), so all four
see the same machine; the bars are ratios of p99 tap-to-decision times against the empty ledger's: within 1.5x
with the big ledger and with the open intents (issue 14). A shared machine moves the absolute figures, much less
the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from ecny_nfc.mock import MockReader
from pos.home import Home
from pos.ledger import Ledger
from pos.payment.session import PaymentSession, TerminalContext
from wallet.card import WalletApplet
from wallet.ids import voucher_id
from wallet.issuance import issue_card
from wallet.limits import OfflineCaps

TERMINAL = "CMGQ0001"
PER_TX = 10_000
TAPS_PER_WALLET = 10  # the history's wallets: each comes back ten times
EARLIER_BOOT = f"{2**22 + 7}:1@00000000-0000-0000-0000-000000000000"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def build_history(path: Path, entries: int) -> float:
    """A ledger of ``entries`` entries (rounded down to a multiple of three: an intent, a payment and its settlement
    per tap) through the ledger's own code."""
    t0 = time.perf_counter()
    voucher = secrets.token_hex(170)  # the size of a real voucher
    issuer = secrets.token_hex(32)
    with Ledger(path) as led, led.batch() as batch:
        taps, tap = entries // 3, 0
        while tap < taps:
            with led.transaction() as tx:
                for _ in range(min(PER_TX // 3, taps - tap)):
                    wallet = f"0991{tap // TAPS_PER_WALLET:012d}"
                    counter = tap % TAPS_PER_WALLET + 1
                    cert = secrets.token_hex(32)
                    if counter == 1:
                        tx.add_certificate(cert, secrets.token_bytes(450))
                    intent = tx.append("intent", amount_fen=1234,
                                       data={"challenge": secrets.token_hex(16), "owner": "bench:1"})
                    vid = voucher_id(wallet, counter)
                    tx.append("payment", voucher_id=vid, wallet_id=wallet, counter=counter, amount_fen=1234,
                              data={"intent": intent.seq, "voucher": voucher, "cert": cert, "issuer": issuer,
                                    "merchant_id": "320508000000101", "terminal_id": TERMINAL,
                                    "balance_after_fen": 10**6})
                    tx.append("settlement", voucher_id=vid, wallet_id=wallet, counter=counter, amount_fen=1234,
                              data={"status": "settled", "reason": None})
                    tap += 1
            if tap % (10 * PER_TX // 3) < PER_TX // 3:
                batch.flush()
                print(f"  history: {3 * tap:,} entries", flush=True)
        led.verify()  # a checkpoint at its end, as after a sync
    return time.perf_counter() - t0


def open_intents(led: Ledger, n: int, kind: str) -> None:
    with led.transaction() as tx:
        for i in range(n):
            owner = "bench:1" if kind == "torn" else EARLIER_BOOT
            intent = tx.append("intent", amount_fen=500, data={"challenge": secrets.token_hex(16), "owner": owner})
            if kind == "torn":
                tx.append("torn", wallet_id=f"0992{i:012d}", counter=1, amount_fen=500, data={"intent": intent.seq})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--intents", type=int, default=100)
    ap.add_argument("--taps", type=int, default=2000, help="taps per ledger")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the big ledger here and reuse it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        tmp = Path(d)
        home = Home(tmp / "home")
        caps = OfflineCaps(10**9, 10**12, 65535)
        big = tmp / "big" / "ledger.db"
        kept = args.keep / f"history-{args.entries}" if args.keep else None
        if kept is not None and (kept / "ledger.db").exists():
            shutil.copytree(kept, big.parent)
            print(f"history of {args.entries:,} entries reused from {kept}")
        else:
            print(f"history of {args.entries:,} entries built in {build_history(big, args.entries):.0f} s")
            if kept is not None:
                shutil.copytree(big.parent, kept, ignore=shutil.ignore_patterns("*-wal", "*-shm", "*.lock"))
        names = ["empty", f"{args.entries // 1000}k entries", f"{args.intents} torn", f"{args.intents} orphans"]
        ledgers = [Ledger(tmp / "empty" / "ledger.db"), Ledger(big), Ledger(tmp / "torn" / "ledger.db"),
                   Ledger(tmp / "orphans" / "ledger.db")]
        open_intents(ledgers[2], args.intents, "torn")
        open_intents(ledgers[3], args.intents, "orphan")
        assert ledgers[1].count() >= args.entries - 2
        contexts: list[TerminalContext] = []
        for led in ledgers:
            ctx = home.context(TERMINAL, led)
            ctx.caps = caps
            contexts.append(ctx)
        n = len(contexts)
        cards = [WalletApplet(issue_card(home.pki, f"c{i:05d}", 1, 10**8, caps)) for i in range(args.taps * n + 50 * n)]
        times: list[list[float]] = [[] for _ in range(n)]
        gc.collect()
        gc.freeze()
        for i in range(args.taps + 50):  # the first 50 rounds warm up and are not counted
            for k in range(n):
                j = (i + k) % n  # a rotating order: no ledger always goes first
                reader = MockReader()
                reader.present(cards.pop())
                out = PaymentSession(contexts[j], reader).pay(1234, timeout=1)
                assert out.approved, out
                if i >= 50:
                    times[j].append(out.elapsed_ms)
                contexts[j].ledger.checkpoint()  # idle time between customers, as the terminals do
        for led in ledgers:
            led.verify()
            led.close()
    load = os.getloadavg()
    print(f"{args.taps} taps per ledger, interleaved; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    base50, base99 = pct(times[0], 50), pct(times[0], 99)
    for name, t in zip(names, times, strict=True):
        p50, p99 = pct(t, 50), pct(t, 99)
        print(f"{name:>16}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   p50 {p50 / base50:4.2f}x  p99 {p99 / base99:4.2f}x")
    for k in (1, 2, 3):
        ratio = pct(times[k], 99) / base99
        print(f"bar p99 {names[k]} <= 1.5x empty: {'PASS' if ratio <= 1.5 else 'FAIL'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
