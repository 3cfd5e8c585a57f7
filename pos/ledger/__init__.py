"""The terminal's durable ledger: append-only, hash-chained, sealed by a key; the outbox of what to sync.

Modules: :mod:`~pos.ledger.store` (the :class:`Ledger`), :mod:`~pos.ledger.transaction` (writes),
:mod:`~pos.ledger.queries` (outbox, settlements, refunds, denylist, sync status), :mod:`~pos.ledger.intents` (the
open-intents table and its in-memory view), :mod:`~pos.ledger.chain` (hashes, entry times),
:mod:`~pos.ledger.verify` (the head check before every write, incremental and full verification),
:mod:`~pos.ledger.seal` (the key file and the seals), :mod:`~pos.ledger.schema` (migrations), :mod:`~pos.ledger.model`,
:mod:`~pos.ledger.batch` (the fleet simulator's batch mode: many transactions in one durable commit).
"""

from pos.ledger.chain import utc_now
from pos.ledger.model import (
    CLOSING_KINDS,
    Entry,
    LedgerError,
    LedgerKeyMissing,
    LedgerMissing,
    LedgerStorageError,
    LedgerTampered,
    OpenIntent,
    PaymentRecorded,
    SyncStatus,
    VerifyReport,
    payment_day,
)
from pos.ledger.store import AUTOCHECKPOINT_PAGES, IDLE_CHECKPOINT_COMMITS, Ledger
from pos.ledger.transaction import Transaction

__all__ = ["AUTOCHECKPOINT_PAGES", "CLOSING_KINDS", "IDLE_CHECKPOINT_COMMITS", "Entry", "Ledger", "LedgerError",
           "LedgerKeyMissing", "LedgerMissing", "LedgerStorageError", "LedgerTampered", "OpenIntent",
           "PaymentRecorded", "SyncStatus", "Transaction", "VerifyReport", "payment_day", "utc_now"]
