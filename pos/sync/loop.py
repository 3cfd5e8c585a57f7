"""The background sync: one terminal synced every ``interval`` seconds in a daemon thread, backing off after
failures with the operator client's :class:`~pos.sync.client.RetryPolicy`."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from pos.home import Home
from pos.sync.client import RetryPolicy
from pos.sync.upload import ProgressCallback, SyncResult, sync_once
from wallet.errors import EcnyError


class SyncLoop:
    """Syncs one terminal in a daemon thread every ``interval`` seconds; after n failures in a row it waits
    ``backoff.delay(n)`` instead (exponential from 2 s with full jitter, up to ``max_backoff``). ``trigger()`` syncs
    now; ``stop()`` ends the thread.

    Callbacks run in the loop's thread: ``on_result(SyncResult)``, ``on_error(Exception)``, ``progress``.
    """

    def __init__(self, home: Home, terminal_id: str, operator_url: str | None = None, *, interval: float = 30.0,
                 max_backoff: float = 300.0, progress: ProgressCallback | None = None,
                 on_result: Callable[[SyncResult], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.home, self.terminal_id, self.operator_url = home, terminal_id, operator_url
        self.interval, self.max_backoff = interval, max_backoff
        self.progress, self.on_result, self.on_error, self.transport = progress, on_result, on_error, transport
        self.backoff = RetryPolicy(base=1.0, cap=max_backoff)
        self.failures = 0
        self.last_result: SyncResult | None = None
        self.last_error: Exception | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SyncLoop:
        self._thread = threading.Thread(target=self._run, name=f"sync:{self.terminal_id}", daemon=True)
        self._thread.start()
        return self

    def trigger(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def next_delay(self) -> float:
        """Seconds until the next sync: the interval, or the backoff after failures."""
        if not self.failures:
            return self.interval
        return self.backoff.delay(self.failures)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last_result = sync_once(self.home, self.terminal_id, self.operator_url, self.progress,
                                             transport=self.transport, retry=RetryPolicy(attempts=2))
                self.failures, self.last_error = 0, None
                if self.on_result:
                    self.on_result(self.last_result)
            except (EcnyError, OSError) as exc:
                self.failures += 1
                self.last_error = exc
                if self.on_error:
                    self.on_error(exc)
            self._wake.wait(self.next_delay())
            self._wake.clear()
