"""The operator's database handle: the engine, the process's write lock, and transactions re-run after a race, a
lock or a dropped connection."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from bank.schema import read_only
from wire.errors import ServiceUnavailable

RETRIES = 8  # attempts after a unique-key race or a lock
DB_RETRIES = 4  # attempts after a dropped or refused database connection
DB_RETRY_BASE_S = 0.05  # the first pause before another attempt (then doubled)
RETRY_AFTER_S = 2  # what a 503 tells the caller to wait

log = logging.getLogger("bank.store")

# What the drivers say when the connection (not the statement) failed: a server gone, restarted or not there.
_CONNECTION_MARKERS = ("server closed the connection", "terminating connection", "connection refused",
                       "could not connect", "connection failed", "connection is closed", "connection to server",
                       "consuming input failed", "ssl connection has been closed", "connection timeout",
                       "connection reset", "broken pipe", "the database system is shutting down",
                       "the database system is starting up", "admin_shutdown")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a lost or refused database connection (worth another attempt on a new one), not a
    statement the database refused."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError | InterfaceError) or any(  # also the drivers' own (psycopg, sqlite3)
            cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(exc).__mro__):
        text = str(exc).lower()
        return any(m in text for m in _CONNECTION_MARKERS)
    return False


def unavailable(exc: BaseException) -> ServiceUnavailable:
    """The typed 503 for a database that stayed out of reach (logged in one line, without a traceback)."""
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("database unavailable: %s", first)
    return ServiceUnavailable("the operator's database is unavailable; nothing was changed, try again",
                              "database_unavailable", RETRY_AFTER_S)


class Store:
    """One database. ``write_lock`` serializes this process's writers on SQLite (one writer at a time: threads
    queue here instead of in SQLite's busy handler); on PostgreSQL it is a no-op. ``db_retries`` bounds the
    attempts after a dropped connection, ``db_retry_base`` the first pause between them (seconds)."""

    def __init__(self, engine: Engine, db_retries: int = DB_RETRIES, db_retry_base: float = DB_RETRY_BASE_S) -> None:
        self.engine = engine
        self.db_retries = max(1, db_retries)
        self.db_retry_base = db_retry_base
        self.write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

    def write(self, fn: Callable[..., Any], *args: Any, before_commit: Callable[[], None] | None = None,
              on_reconnect: Callable[[], None] | None = None) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, again from the start after a unique-key race, a lock or a
        dropped connection (then on a new one, ``on_reconnect()`` first: the transaction may have committed before
        the connection dropped). Raise :class:`ServiceUnavailable` when the database stays out of reach.

        ``before_commit()`` runs once ``fn`` has returned, before the transaction commits."""
        races = drops = 0
        while True:
            try:
                with self.write_lock, self.engine.begin() as conn:
                    out = fn(conn, *args)
                    if before_commit is not None:
                        before_commit()
                    return out
            except IntegrityError:
                races += 1
                if races >= RETRIES:
                    raise
            except Exception as exc:
                if is_transient(exc):
                    drops += 1
                    if drops >= self.db_retries:
                        raise unavailable(exc) from None
                    time.sleep(self.db_retry_base * (1 << (drops - 1)))
                    if on_reconnect is not None:
                        on_reconnect()
                    continue
                races += 1
                if not isinstance(exc, OperationalError) or races >= RETRIES or "locked" not in str(exc).lower():
                    raise
                time.sleep(0.05 * races)

    def write_once(self, fn: Callable[[Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one transaction under the write lock, without retries (a dropped connection is a
        :class:`ServiceUnavailable`)."""
        try:
            with self.write_lock, self.engine.begin() as conn:
                return fn(conn)
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise

    def read(self, fn: Callable[[Connection], Any]) -> Any:
        """``fn(conn)`` on a read-only connection (see :func:`bank.schema.read_only`), again on a new connection
        after a dropped one; :class:`ServiceUnavailable` when the database stays out of reach."""
        drops = 0
        while True:
            try:
                with read_only(self.engine) as conn:
                    return fn(conn)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                drops += 1
                if drops >= self.db_retries:
                    raise unavailable(exc) from None
                time.sleep(self.db_retry_base * (1 << (drops - 1)))
