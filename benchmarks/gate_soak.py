"""Gate soak: 10,000 taps through one gate, with RSS and decision time per window of taps.

    .venv/bin/python benchmarks/gate_soak.py [--taps 10000] [--window 1000] [--cards 200]

Every tap is a full offline sale at the gate (SELECT, READ INFO, certificate chain, anti-passback and capacity
checks, PAY, voucher verification, ledger commit with fsync, gate.db update). Wallets come round again and again
(a passback window of 0 s lets them buy again; every 10th tap buys 2 tickets, so the next tap of that wallet is a
re-entry on its pass). The bar: no upward trend in RSS or p99 decision time, RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecny_nfc.mock import MockReader
from pos.config import GateSettings
from pos.gate.ticket_gate import PREPAID, Gate
from pos.home import Home
from wallet.card import WalletApplet
from wallet.issuance import issue_card
from wallet.limits import OfflineCaps

GATE = "HQGT0001"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def slope(ys: list[float]) -> float:
    """Least-squares slope per window."""
    n = len(ys)
    xm, ym = (n - 1) / 2, statistics.fmean(ys)
    den = sum((x - xm) ** 2 for x in range(n)) or 1.0
    return sum((x - xm) * (y - ym) for x, y in enumerate(ys)) / den


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--taps", type=int, default=10_000)
    ap.add_argument("--window", type=int, default=1_000)
    ap.add_argument("--cards", type=int, default=200)
    args = ap.parse_args()
    caps = OfflineCaps(50_000, 10**10, 65_535)
    with tempfile.TemporaryDirectory(prefix="pos-soak") as d:
        home = Home(Path(d) / "home")
        gate = Gate(home, GATE, settings=GateSettings(daily_capacity=10**9, passback_window_s=0))
        gate.ctx.caps = caps
        cards = [WalletApplet(issue_card(home.pki, f"c{i:05d}", 2, 50_000_000, caps)) for i in range(args.cards)]
        reader = MockReader()
        times: list[float] = []
        idle: list[float] = []
        windows = []
        opened = prepaid = 0
        gc.collect()
        rss0 = rss_mb()
        t_start = time.perf_counter()
        for i in range(args.taps):
            card = cards[i % len(cards)]
            reader.present(card)
            t0 = time.perf_counter()
            decision = gate.admit(reader, "adult", 2 if i % 10 == 0 else 1, timeout=1)
            times.append((time.perf_counter() - t0) * 1e3)
            assert decision is not None
            t1 = time.perf_counter()
            gate.housekeeping()  # as the gate app does while the result shows (between visitors)
            idle.append((time.perf_counter() - t1) * 1e3)
            opened += decision.open
            prepaid += decision.code == PREPAID
            if (i + 1) % args.window == 0:
                w = times[-args.window:]
                windows.append((i + 1, rss_mb(), statistics.median(w), pct(w, 99)))
        elapsed = time.perf_counter() - t_start
        entries, _ = gate.stats()
        gate.close()
    print(f"{args.taps} gate taps in {elapsed:.1f} s ({args.taps / elapsed:.0f} taps/s), {opened} opened "
          f"({prepaid} re-entries on a pass), entries today {entries}; RSS before the first tap {rss0:.1f} MB")
    print(f"housekeeping between taps (WAL checkpoints, not in the decision times): max {max(idle):.1f} ms, "
          f"{sum(1 for t in idle if t > 1)} of {len(idle)} over 1 ms")
    print(f"{'taps':>7} {'RSS MB':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for n, rss, p50, p99 in windows:
        print(f"{n:>7} {rss:>8.1f} {p50:>8.2f} {p99:>8.2f}")
    rss_slope = slope([w[1] for w in windows[1:]]) if len(windows) > 2 else 0.0
    p99_slope = slope([w[3] for w in windows]) if len(windows) > 1 else 0.0
    peak = max(w[1] for w in windows)
    print(f"trend per {args.window} taps (after the first window): RSS {rss_slope:+.2f} MB, p99 {p99_slope:+.3f} ms; "
          f"peak RSS {peak:.1f} MB (bar <= 150 MB): {'OK' if peak <= 150 else 'OVER'}")


if __name__ == "__main__":
    main()
