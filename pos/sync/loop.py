"""The background sync: one terminal synced every ``interval`` seconds in a daemon thread, backing off after
failures with the operator client's :class:`~pos.sync.client.RetryPolicy`.

Any failure of a round (the operator down, a full disk under the ledger: ``OSError``, ``sqlite3.Error``, any
:class:`~wallet.errors.EcnyError`) ends that round: it is reported through ``on_error``, counted for the backoff, and
the next round (or :meth:`SyncLoop.trigger`) starts afresh. Time is injected (``clock``), so a test moves it
forward instead of waiting.

Every round first writes the payments this process keeps because the disk refused them
(:mod:`pos.payment.unwritten`), so a payment paid during a full disk reaches the ledger, and this round's upload,
as soon as space is freed; while the disk still refuses they stay kept and the round goes on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from pos.home import Home
from pos.payment.unwritten import KEPT
from pos.sync.client import RetryPolicy
from pos.sync.upload import ProgressCallback, sync_once


class SyncLoop:
    """Syncs one terminal in a daemon thread every ``interval`` seconds; after n failures in a row it waits
    ``backoff.delay(n)`` instead (exponential from 2 s with full jitter, up to ``max_backoff``). ``trigger()`` syncs
    now (a round asked for while one runs follows it at once); ``stop()`` ends the thread; ``run_round()`` runs one
    round in the calling thread.

    ``sync`` is what a round does (default: :func:`~pos.sync.upload.sync_once` for ``home`` and ``terminal_id``).
    ``clock`` gives seconds (monotonic); the thread looks at it at least every ``poll`` seconds.
    Callbacks run in the loop's thread: ``on_start()``, ``on_result(result)``, ``on_error(Exception)``, ``progress``.
    """

    def __init__(self, home: Home, terminal_id: str, operator_url: str | None = None, *, interval: float = 30.0,
                 max_backoff: float = 300.0, progress: ProgressCallback | None = None,
                 on_result: Callable[[Any], object] | None = None,
                 on_error: Callable[[Exception], object] | None = None,
                 on_start: Callable[[], object] | None = None,
                 transport: httpx.BaseTransport | None = None,
                 sync: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, poll: float = 1.0,
                 backoff: RetryPolicy | None = None, first_delay: float = 0.0) -> None:
        self.home, self.terminal_id, self.operator_url = home, terminal_id, operator_url
        self.interval, self.max_backoff = interval, max_backoff
        self.progress, self.on_result, self.on_error, self.on_start = progress, on_result, on_error, on_start
        self.transport = transport
        self.sync = sync or self._sync_once
        self.clock, self.poll = clock, poll
        self.backoff = backoff or RetryPolicy(base=1.0, cap=max_backoff)
        self.failures = 0
        self.rounds = 0
        self.running = False
        self.last_result: Any = None
        self.last_error: Exception | None = None
        self.next_at = clock() + first_delay
        self._lock = threading.Lock()
        self._again = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sync_once(self) -> Any:
        return sync_once(self.home, self.terminal_id, self.operator_url, self.progress, transport=self.transport,
                         retry=RetryPolicy(attempts=2))

    def start(self) -> SyncLoop:
        self._thread = threading.Thread(target=self._run, name=f"sync:{self.terminal_id}", daemon=True)
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Sync now: at once when idle, right after the round under way otherwise."""
        with self._lock:
            self.next_at = self.clock()
            self._again = self.running
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def next_delay(self) -> float:
        """Seconds from the end of a round to the next one: the interval, or the backoff after failures."""
        if not self.failures or math.isinf(self.interval):
            return self.interval  # an infinite interval: rounds only when triggered, after failures too
        return min(self.max_backoff, self.backoff.delay(self.failures))

    def seconds_left(self) -> float:
        """Seconds until the next round is due (0 when due or running)."""
        return 0.0 if self.running else max(0.0, self.next_at - self.clock())

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def run_round(self) -> bool:
        """One round in the calling thread; True when it succeeded. Never raises for a failed sync."""
        with self._lock:
            if self.running:
                self._again = True
                return False
            self.running = True
        ok = False
        try:
            if self.on_start:
                self.on_start()
            self.write_kept()
            self.last_result = self.sync()
            self.failures, self.last_error, ok = 0, None, True
        except Exception as exc:  # a background round ends cleanly whatever broke
            self.failures += 1
            self.last_error = exc
        finally:
            with self._lock:
                self.rounds += 1
                self.running = False
                self.next_at = self.clock() + (0.0 if self._again else self.next_delay())
                self._again = False
        if ok:
            if self.on_result:
                self.on_result(self.last_result)
        elif self.on_error and self.last_error is not None:
            self.on_error(self.last_error)
        return ok

    def write_kept(self) -> None:
        """Write the payments kept after a storage failure (nothing is opened when none are kept)."""
        KEPT.write_for(self.home.ledger_path(self.terminal_id), lambda: self.home.ledger(self.terminal_id))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.due():
                self._wake.clear()
                self.run_round()
                continue
            self._wake.wait(min(self.poll, self.seconds_left()))
            self._wake.clear()
