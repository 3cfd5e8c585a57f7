"""Clerk UI latency: time to first paint, and Enter to the approved result on screen with a mock tap.

    .venv/bin/python benchmarks/tui_latency.py [--runs 20] [--profile]

First paint: from constructing the app (Textual already imported, as in a running `pos run`) to the counter screen
being mounted and its texts filled, in a headless 80x24 run.

Enter -> approved: from the Enter key event going to the app (a typed amount on the counter), through the charge
(a mock card tapped as soon as the terminal waits for it, through the tap broker: the same path as `pos card tap`;
the full offline payment: ECDSA verify, PAY, voucher check, ledger commit with fsync), to the first frame that
shows "✔" (the approved verdict) being written out. Headless Textual computes each frame but does not turn it into
terminal output: this benchmark does that too (``render_segments``, as a real terminal's driver would) for every
frame after Enter, and stops the clock at the first frame whose output holds the verdict.

The CPU time of the process (every thread: the UI, the charge, the card) over the same span is printed too: on a
shared machine it moves far less than the wall time, so it compares two versions of the code more steadily.

"until idle" is the earlier measure of this benchmark: until Textual's test pilot finds the app idle after the key
(``Pilot.press`` returns), which adds its own idle detection (20 ms sleeps until the process is quiet) and whatever
the app does after showing the result; it is printed for comparison.

``--profile`` adds perf_counter marks of where the time goes (key handled, tap presented, charge decided, result
shown, painted) when the app has them (the counter's panels).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

t_import = time.perf_counter()
from textual._compositor import CompositorUpdate  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from ecny_nfc.mock import MockReader  # noqa: E402
from pos.cards.manage import issue_cards  # noqa: E402
from pos.home import Home  # noqa: E402
from pos.runtime import Runtime  # noqa: E402
from pos.ui.clerk import ClerkApp, CounterScreen  # noqa: E402

IMPORT_S = time.perf_counter() - t_import
TERMINAL = "CMGQ0001"
VERDICT = "✔"


class Offline:
    def online(self) -> bool:
        return False

    def sync(self, progress=None):  # type: ignore[no-untyped-def]
        return {}

    def refund(self, voucher_id, amount_fen=None):  # type: ignore[no-untyped-def]
        return {}

    def reconcile(self, day=None):  # type: ignore[no-untyped-def]
        return {}


class TimedClerk(ClerkApp):
    """The clerk app, with every frame after ``watch()`` turned into terminal output and the first one showing the
    approved verdict timed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watching = False
        self.painted_at: float | None = None
        self.painted_cpu: float | None = None
        self.painted = asyncio.Event()

    def watch(self) -> None:
        self.watching, self.painted_at = True, None
        self.painted.clear()

    def _display(self, screen: Any, renderable: Any) -> None:
        super()._display(screen, renderable)
        if not self.watching or renderable is None:
            return
        if isinstance(renderable, CompositorUpdate):
            output = renderable.render_segments(self.console)
        else:
            output = "".join(s.text for s in self.console.render(renderable))
        if VERDICT in output and self.painted_at is None:
            self.painted_at = time.perf_counter()
            self.painted_cpu = time.process_time()
            self.watching = False
            self.painted.set()


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError("screen did not appear")
        await asyncio.sleep(0.001)


def counter_ready(app: ClerkApp) -> bool:
    return isinstance(app.screen, CounterScreen) and app.screen.is_ready


MARKS: dict[str, float] = {}


def install_marks() -> None:
    """perf_counter marks along the path (the counter's panels; a tree without them just has fewer marks)."""
    from pos.cards import tap_socket
    from pos.runtime import Runtime as R
    from pos.ui.clerk import screens

    def wrap(cls: Any, name: str, before: str | None = None, after: str | None = None) -> None:
        fn = getattr(cls, name, None)
        if fn is None:
            return

        def wrapped(*a: Any, **k: Any) -> Any:
            if before:
                MARKS.setdefault(before, time.perf_counter())
            out = fn(*a, **k)
            if after:
                MARKS.setdefault(after, time.perf_counter())
            return out

        setattr(cls, name, wrapped)

    wrap(screens.CounterScreen, "start_charge", "key handled", "charge panel set")
    wrap(tap_socket.TapBroker, "tap", "tap presented")
    wrap(R, "charge", None, "charge decided")
    wrap(screens.CounterScreen, "charge_decided", "outcome on the UI thread")
    wrap(screens.CounterScreen, "show_result", None, "result panel set")


async def one_run(home: Home, card_id: str, profile: bool) -> tuple[float, float, float, float]:
    t0 = time.perf_counter()
    app = TimedClerk(Runtime(home, TERMINAL, MockReader()), lang="zh-CN", services=Offline(), status_interval=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: counter_ready(app))
        first_paint = time.perf_counter() - t0
        await pilot.press("1", "2", "full_stop", "3")
        await pilot.pause()
        broker = app.runtime.broker
        assert broker is not None

        def tap_when_armed() -> None:
            while not broker.armed:
                time.sleep(0.0005)
            broker.tap(card_id)

        threading.Thread(target=tap_when_armed, daemon=True).start()
        MARKS.clear()
        app.watch()
        t1, cpu1 = time.perf_counter(), time.process_time()
        await Pilot.press(pilot, "enter")
        idle = time.perf_counter() - t1
        await asyncio.wait_for(app.painted.wait(), 10)
        assert app.painted_at is not None and app.painted_cpu is not None
        painted, cpu = app.painted_at - t1, app.painted_cpu - cpu1
        if profile:
            MARKS["painted"] = app.painted_at
            print("  " + "  ".join(f"{k} {1e3 * (v - t1):.1f}" for k, v in sorted(MARKS.items(), key=lambda kv: kv[1])))
        with home.ledger(TERMINAL) as ledger:  # the tap was a real payment
            assert any(e.kind == "payment" for e in ledger.entries()), "no payment recorded"
    return first_paint, painted, idle, cpu


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (f"{name} ({len(values)} runs): median {statistics.median(values):.1f} ms, p90 {pct(values, 90):.1f} ms, "
            f"max {max(values):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="print where the time goes in each run (ms after Enter)")
    args = ap.parse_args()
    if args.profile:
        install_marks()
    with tempfile.TemporaryDirectory(prefix="pos-bench") as d:
        home = Home(Path(d) / "home")
        paints, taps, idles, cpus = [], [], [], []
        for _ in range(args.runs):
            card = issue_cards(home, 4, 100_000, 1)[0]  # a fresh card: a card's offline count is capped
            fp, ka, idle, cpu = asyncio.run(one_run(home, card.card_id, args.profile))
            paints.append(fp * 1e3)
            taps.append(ka * 1e3)
            idles.append(idle * 1e3)
            cpus.append(cpu * 1e3)
    print(f"clerk app import (textual + pos.ui): {IMPORT_S * 1e3:.0f} ms")
    print(line("first paint, 80x24 headless", paints))
    print(line("Enter -> approved result painted, mock tap", taps))
    print(line("  CPU time of the process (all threads) in that span", cpus))
    print(line("Enter -> app idle again (Textual pilot; the earlier measure)", idles))


if __name__ == "__main__":
    main()
