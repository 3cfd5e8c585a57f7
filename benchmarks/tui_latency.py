"""Clerk UI latency: time to first paint, and keypress-to-approved-screen with a mock tap.

    .venv/bin/python benchmarks/tui_latency.py [--runs 20]

First paint: from constructing the app (Textual already imported, as in a running `pos run`) to the counter screen
being mounted and its texts filled, in a headless 80x24 run. Keypress to approved: from pressing Enter on a typed
amount, through the tap-the-wallet screen, a mock card tapped at once through the tap broker (the same path as
`pos card tap`), the full offline payment (ECDSA verify, PAY, voucher check, ledger commit with fsync), to the
approved screen being mounted. Also reports the process's import time of the clerk app.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

t_import = time.perf_counter()
from textual.pilot import Pilot  # noqa: E402

from ecny_nfc.mock import MockReader  # noqa: E402
from pos.cards.manage import issue_cards  # noqa: E402
from pos.home import Home  # noqa: E402
from pos.runtime import Runtime  # noqa: E402
from pos.ui.clerk import ClerkApp, CounterScreen, ResultScreen  # noqa: E402

IMPORT_S = time.perf_counter() - t_import
TERMINAL = "CMGQ0001"


class Offline:
    def online(self) -> bool:
        return False

    def sync(self, progress=None):  # type: ignore[no-untyped-def]
        return {}

    def refund(self, voucher_id, amount_fen=None):  # type: ignore[no-untyped-def]
        return {}

    def reconcile(self, day=None):  # type: ignore[no-untyped-def]
        return {}


async def wait_for(pilot: Pilot, cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError("screen did not appear")
        await asyncio.sleep(0.001)


def ready(app: ClerkApp, kind: type) -> bool:
    return isinstance(app.screen, kind) and app.screen.is_ready


async def one_run(home: Home, card_id: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    app = ClerkApp(Runtime(home, TERMINAL, MockReader()), lang="zh-CN", services=Offline(), status_interval=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: ready(app, CounterScreen))
        first_paint = time.perf_counter() - t0
        await pilot.press("1", "2", "full_stop", "3")
        broker = app.runtime.broker
        assert broker is not None
        tapped = threading.Event()

        def tap_when_armed() -> None:
            while not broker.armed:
                time.sleep(0.0005)
            broker.tap(card_id)
            tapped.set()

        t1 = time.perf_counter()
        threading.Thread(target=tap_when_armed, daemon=True).start()
        await pilot.press("enter")
        await wait_for(pilot, lambda: ready(app, ResultScreen))
        key_to_approved = time.perf_counter() - t1
        assert app.screen.outcome.approved, app.screen.outcome  # type: ignore[attr-defined]
    return first_paint, key_to_approved


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pos-bench") as d:
        home = Home(Path(d) / "home")
        paints, taps = [], []
        for _ in range(args.runs):
            card = issue_cards(home, 4, 100_000, 1)[0]  # a fresh card: a card's offline count is capped
            fp, ka = asyncio.run(one_run(home, card.card_id))
            paints.append(fp * 1e3)
            taps.append(ka * 1e3)
    print(f"clerk app import (textual + pos.ui): {IMPORT_S * 1e3:.0f} ms")
    print(f"first paint, 80x24 headless ({args.runs} runs): median {statistics.median(paints):.1f} ms, "
          f"p90 {pct(paints, 90):.1f} ms, max {max(paints):.1f} ms")
    print(f"Enter -> approved screen with a mock tap ({args.runs} runs): median {statistics.median(taps):.1f} ms, "
          f"p90 {pct(taps, 90):.1f} ms, max {max(taps):.1f} ms")


if __name__ == "__main__":
    main()
