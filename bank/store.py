"""The operator's database handle: the engine, the process's write lock, and transactions re-run after a race."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

RETRIES = 8


class Store:
    """One database. ``write_lock`` serializes this process's writers on SQLite (one writer at a time: threads
    queue here instead of in SQLite's busy handler); on PostgreSQL it is a no-op."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

    def write(self, fn: Callable[..., Any], *args: Any, before_commit: Callable[[], None] | None = None) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, again from the start after a unique-key race or a lock.

        ``before_commit()`` runs once ``fn`` has returned, before the transaction commits."""
        for attempt in range(RETRIES):
            try:
                with self.write_lock, self.engine.begin() as conn:
                    out = fn(conn, *args)
                    if before_commit is not None:
                        before_commit()
                    return out
            except IntegrityError:
                if attempt == RETRIES - 1:
                    raise
            except OperationalError as exc:
                if attempt == RETRIES - 1 or "locked" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def write_once(self, fn: Callable[[Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one transaction under the write lock, without retries."""
        with self.write_lock, self.engine.begin() as conn:
            return fn(conn)
