"""The fleet simulator's batch mode: the transactions of many taps on one ledger in one durable commit.

``with ledger.batch() as b: ...`` opens one write transaction (``BEGIN IMMEDIATE``); until it ends, every
:meth:`~pos.ledger.Ledger.transaction` inside is a savepoint of it. Each still checks the head it extends, chains
and seals its entries and rolls back alone when it fails, so the ledger a batch leaves is the one the same
transactions would have left one by one. What a batch gives up is durability between its commits: a transaction is
on disk only once :meth:`Batch.flush` (or the end of the block) commits the batch, so a crash loses every tap since
the last flush from the ledger while the cards have paid them. A terminal never runs in this mode (its approvals
follow durable commits, see :mod:`pos.payment.session`); the fleet simulator does, whose cards are scratch wallets
held in the same process and lost with it anyway. Other connections cannot write the ledger while a batch is open.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import TYPE_CHECKING

from pos.ledger.intents import OpenIntents
from pos.ledger.model import LedgerStorageError

if TYPE_CHECKING:
    from pos.ledger.store import Ledger


class Batch:
    """One ledger's open batch (see the module docstring)."""

    __slots__ = ("_ledger", "transactions")

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.transactions = 0  # committed into the open batch since it began

    def __enter__(self) -> Batch:
        self.begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._drop()
            return
        self.end()

    def flush(self) -> int:
        """Commit the batch durably (one fsync) and open the next; returns how many transactions it held."""
        held = self.end()
        self.begin()
        return held

    def begin(self) -> None:
        """Open the batch (what entering the ``with`` block does)."""
        ledger = self._ledger
        if ledger._in_batch or ledger._conn.in_transaction:
            raise RuntimeError("a batch opens on a ledger with no transaction open")
        try:
            ledger._begin()
        except (sqlite3.OperationalError, OSError) as exc:
            raise self._storage_error(exc) from exc
        ledger._in_batch = True
        self.transactions = ledger._commits

    def end(self) -> int:
        """Commit the batch durably and leave batch mode (what leaving the ``with`` block does); returns how many
        transactions it held."""
        ledger = self._ledger
        held = ledger._commits - self.transactions
        ledger._in_batch = False
        if not ledger._conn.in_transaction:  # SQLite rolled the whole batch back (a full disk, an I/O error)
            self._drop()
            raise self._storage_error(OSError("the batch's transaction was rolled back"))
        try:
            ledger._conn.execute("COMMIT")
        except (sqlite3.OperationalError, OSError) as exc:
            self._drop()
            raise self._storage_error(exc) from exc
        return held

    def _drop(self) -> None:
        """Roll the whole batch back and forget what the ledger remembered of its transactions."""
        ledger = self._ledger
        ledger._in_batch = False
        if ledger._conn.in_transaction:
            ledger._conn.execute("ROLLBACK")
        ledger._sealed = None
        ledger._written = None
        ledger._known_certs.clear()
        ledger._intents = OpenIntents(ledger._conn)

    def _storage_error(self, exc: BaseException) -> LedgerStorageError:
        path = self._ledger.path
        return LedgerStorageError(f"the batch on ledger {path} could not be committed ({exc}): none of its "
                                  "transactions since the last flush was written", str(path))
