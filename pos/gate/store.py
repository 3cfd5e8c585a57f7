"""The gate's own database, ``gate.db`` beside the terminal's ledger (SQLite, WAL, ``synchronous=FULL``): passes,
daily counters and marks; and the online tickets the gate has learnt (docs/tickets.md).

A *pass* is what lets a wallet through without paying: the tickets of a gate sale (keyed by its voucher id) or of an
online order (keyed ``online:ORDER``). Daily counters hold the entries and the tickets the gate sold itself; online
tickets are counted from ``online_orders`` (see :mod:`pos.gate.online_tickets`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pos.ledger import AUTOCHECKPOINT_PAGES, IDLE_CHECKPOINT_COMMITS
from wallet.errors import EcnyError

ONLINE = "online:"  # the key of an online order's pass: ONLINE + order id


class GateError(EcnyError):
    """The gate cannot run (wrong terminal kind, unknown product, unusable gate database)."""


class GateStore:
    """Passes and daily counters in SQLite. Safe to share between threads (one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")  # checkpoints between taps
            self.conn.executescript("""
                CREATE TABLE IF NOT EXISTS passes (
                    id INTEGER PRIMARY KEY, day INTEGER NOT NULL, wallet_id TEXT NOT NULL, voucher_id TEXT UNIQUE,
                    sku TEXT NOT NULL, tickets INTEGER NOT NULL, used INTEGER NOT NULL,
                    bought_ms INTEGER NOT NULL, last_entry_ms INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS passes_wallet ON passes(wallet_id, id);
                CREATE TABLE IF NOT EXISTS days (day INTEGER PRIMARY KEY, entries INTEGER NOT NULL,
                                                 sold INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS online_orders (
                    order_id TEXT PRIMARY KEY, wallet_id TEXT NOT NULL, sku TEXT NOT NULL, day INTEGER NOT NULL,
                    quantity INTEGER NOT NULL, status TEXT NOT NULL, used_elsewhere INTEGER NOT NULL,
                    reported INTEGER NOT NULL DEFAULT 0);
                CREATE INDEX IF NOT EXISTS online_orders_wallet ON online_orders(wallet_id, day);
                CREATE INDEX IF NOT EXISTS online_orders_day ON online_orders(day);
                CREATE TABLE IF NOT EXISTS online_offers (wallet_id TEXT PRIMARY KEY, until_ms INTEGER NOT NULL);
            """)
        except sqlite3.DatabaseError as exc:
            raise GateError(f"cannot open gate database {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._writes = 0  # since the last idle-time checkpoint

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self, every: int = IDLE_CHECKPOINT_COMMITS) -> bool:
        """Copy the WAL into the database once ``every`` writes have gone by (call it between taps)."""
        with self._lock:
            if self._writes < every:
                return False
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._writes = 0
            return True

    def day_counts(self, day: int) -> tuple[int, int]:
        """(entries, tickets sold) on ``day``."""
        with self._lock:
            row = self.conn.execute("SELECT entries, sold FROM days WHERE day = ?", (day,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def has_pass(self, voucher_id: str) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM passes WHERE voucher_id = ?", (voucher_id,)).fetchone() is not None

    def usable_pass(self, wallet_id: str, day: int) -> tuple[int, int, int, int, str | None] | None:
        """(id, tickets, used, last_entry_ms, key) of the wallet's oldest pass of ``day`` with a ticket left (the key
        is the sale's voucher id, or ``online:ORDER``)."""
        with self._lock:
            return self.conn.execute(
                "SELECT id, tickets, used, last_entry_ms, voucher_id FROM passes WHERE wallet_id = ? AND day = ? "
                "AND used < tickets ORDER BY id LIMIT 1", (wallet_id, day)).fetchone()

    def last_entered(self, wallet_id: str) -> tuple[int, int, int] | None:
        """(tickets, used, last_entry_ms) of the pass the wallet last entered on (anti-passback)."""
        with self._lock:
            return self.conn.execute(
                "SELECT tickets, used, last_entry_ms FROM passes WHERE wallet_id = ? AND used > 0 "
                "ORDER BY last_entry_ms DESC LIMIT 1", (wallet_id,)).fetchone()

    def _bump_day(self, day: int, entries: int, sold: int) -> None:
        self.conn.execute("INSERT INTO days (day, entries, sold) VALUES (?, ?, ?) ON CONFLICT(day) DO UPDATE SET "
                          "entries = entries + excluded.entries, sold = sold + excluded.sold", (day, entries, sold))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One durable write (all or nothing) under the lock."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._writes += 1

    def _insert_pass(self, day: int, wallet_id: str, voucher_id: str | None, sku: str, tickets: int, used: int,
                     bought_ms: int, last_entry_ms: int) -> bool:
        """A new pass; False (and nothing written) when the voucher has one already."""
        return self.conn.execute(
            "INSERT INTO passes (day, wallet_id, voucher_id, sku, tickets, used, bought_ms, last_entry_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(voucher_id) DO NOTHING",
            (day, wallet_id, voucher_id, sku, tickets, used, bought_ms, last_entry_ms)).rowcount == 1

    def _use(self, pass_id: int, day: int, now_ms: int) -> None:
        self.conn.execute("UPDATE passes SET used = used + 1, last_entry_ms = ? WHERE id = ?", (now_ms, pass_id))
        self._bump_day(day, 1, 0)

    def buy(self, day: int, wallet_id: str, voucher_id: str | None, sku: str, tickets: int, now_ms: int) -> None:
        """Record a pass of ``tickets`` with its first entry used (a pass restored for this voucher meanwhile
        gets the entry; its tickets are sold once)."""
        with self.transaction():
            row = self.conn.execute("SELECT id FROM passes WHERE voucher_id = ?", (voucher_id,)).fetchone() \
                if voucher_id is not None else None
            if row is not None:
                self._use(row[0], day, now_ms)
                return
            self._insert_pass(day, wallet_id, voucher_id, sku, tickets, 1, now_ms, now_ms)
            self._bump_day(day, 1, tickets)

    def restore(self, day: int, wallet_id: str, voucher_id: str, sku: str, tickets: int, bought_ms: int) -> bool:
        """Record the pass of a payment the gate never got to record (no entry used yet); False if it exists."""
        with self.transaction():
            added = self._insert_pass(day, wallet_id, voucher_id, sku, tickets, 0, bought_ms, 0)
            if added:
                self._bump_day(day, 0, tickets)
        return added

    def enter(self, pass_id: int, day: int, now_ms: int) -> None:
        """Use one more ticket of a pass."""
        with self.transaction():
            self._use(pass_id, day, now_ms)

    def mark(self, name: str) -> int:
        with self._lock:
            row = self.conn.execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def set_mark(self, name: str, value: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO marks (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                              "value = excluded.value", (name, value))

    # -- online tickets (pos.gate.online_tickets) -------------------------------------------------------------------
    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of a query (under the lock)."""
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """One statement in a transaction of its own; the rows it changed."""
        with self.transaction():
            return int(self.conn.execute(sql, params).rowcount)

    def online_pass(self, day: int, wallet_id: str, order_id: str, sku: str, tickets: int, now_ms: int) -> bool:
        """The pass of an online order (no entry used; the gate did not sell it, so the day's sales do not move);
        False when it exists."""
        with self.transaction():
            return self._insert_pass(day, wallet_id, ONLINE + order_id, sku, tickets, 0, now_ms, 0)
