"""A write transaction on the ledger: ``with ledger.transaction() as tx: tx.append(...)``.

It begins with ``BEGIN IMMEDIATE`` (the write lock until it ends, which serializes writers across processes),
commits durably when the block ends and rolls back when it raises. Reads through the ledger inside the block see
the transaction's own writes.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from pos.ledger.model import Entry

if TYPE_CHECKING:
    from pos.ledger.store import Ledger


class Transaction:
    """Entries appended here commit together, or not at all."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __enter__(self) -> Transaction:
        self._ledger._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._ledger._rollback()
            return
        try:
            self._ledger._commit()
        except BaseException:
            self._ledger._rollback()
            raise

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
