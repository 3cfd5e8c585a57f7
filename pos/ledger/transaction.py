"""A write transaction on the ledger: ``with ledger.transaction() as tx: tx.append(...)``.

It begins with ``BEGIN IMMEDIATE`` (the write lock until it ends, which serializes writers across processes),
commits durably when the block ends and rolls back when it raises. Reads through the ledger inside the block see
the transaction's own writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pos.ledger.model import Entry, LedgerStorageError

if TYPE_CHECKING:
    from pos.ledger.store import Ledger


class Transaction:
    """Entries appended here commit together, or not at all."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __enter__(self) -> Transaction:
        try:
            self._ledger._begin()
        except (sqlite3.OperationalError, OSError) as exc:
            raise self._storage_error(exc) from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._quiet_rollback()
            if isinstance(exc, sqlite3.OperationalError | OSError):  # a write the disk refused, inside the block
                raise self._storage_error(exc) from exc
            return
        try:
            self._ledger._commit()
        except (sqlite3.OperationalError, OSError) as failed:
            self._quiet_rollback()
            raise self._storage_error(failed) from failed
        except BaseException:
            self._quiet_rollback()
            raise

    def _quiet_rollback(self) -> None:
        # SQLite rolls back by itself when the connection cannot: nothing of the transaction remains
        with contextlib.suppress(sqlite3.OperationalError, OSError):
            self._ledger._rollback()

    def _storage_error(self, exc: BaseException) -> LedgerStorageError:
        path = self._ledger.path
        return LedgerStorageError(f"the ledger {path} could not be written ({exc}): nothing of this step was "
                                  "written; free some space on its disk, or make it writable, then try again",
                                  str(path))

    def append(self, kind: str, *, voucher_id: str | None = None, wallet_id: str | None = None,
               counter: int | None = None, amount_fen: int = 0, data: dict[str, Any] | None = None,
               time: str | None = None) -> Entry:
        """Append one entry. A second payment with a recorded voucher id raises
        :class:`~pos.ledger.model.PaymentRecorded` (the transaction then rolls back)."""
        return self._ledger._append(kind, voucher_id=voucher_id, wallet_id=wallet_id, counter=counter,
                                    amount_fen=amount_fen, data=data, time=time)

    def add_certificate(self, fingerprint: str, der: bytes) -> None:
        """Remember a certificate by fingerprint (each one is stored once)."""
        self._ledger._add_certificate(fingerprint, der)
