"""Payments a card made that the ledger could not write (a full disk, an I/O error): kept in memory until it can.

When the ledger refuses the ``payment`` entry of a voucher the terminal verified, the card has paid. The charge is
reported ``pending_recovery`` (never approved, never "not charged"), and the voucher, with its intent and the
card's and issuer's certificates, is kept here, in this process, and written as soon as the disk allows:

- before the next charge at that terminal (:meth:`pos.payment.session.PaymentSession.pay`, the gate's tap),
- at every round of the background sync of a running terminal (:class:`pos.sync.loop.SyncLoop`), which the
  clerk's F5 also runs.

Each write goes through the same call a tap records with (:func:`pos.payment.vouchers.record_payment`): the
payment entry, once per voucher id, closing its intent in the same transaction. So it is written exactly once,
whoever comes first: a voucher the card's next tap already recorded from the card's transaction log (the RECOVER
path, :mod:`pos.payment.recovery`) is found on file and only dropped from here, and once written here, the intent is
closed, so that next tap has nothing left to ask. Once written it is an ordinary approved payment (outbox, reports,
settlement).

Memory ends with the process: a one-shot ``pos pay`` exits, and so may a crashed terminal. The voucher is then still
on the card's transaction log, and the charge's intent and pay-sent mark name the wallet, so the next tap of that
wallet at this terminal records it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pos.ledger import Entry, Ledger
from pos.payment.outcome import Declined
from pos.payment.reasons import Reason
from pos.payment.vouchers import record_payment
from wallet.errors import EcnyError, StorageError
from wallet.voucher import Voucher

__all__ = ["KEPT", "Kept", "Unwritten", "ledger_key"]


@dataclass(frozen=True, slots=True)
class Unwritten:
    """A verified voucher whose payment entry the ledger refused, with what recording it needs."""

    voucher: Voucher
    intent_seq: int
    cert_der: bytes
    issuer_der: bytes
    discount: dict[str, Any] | None = None  # the charge's instant discount (pos.payment.discounts)

    @property
    def voucher_id(self) -> str:
        return self.voucher.voucher_id

    @property
    def amount_fen(self) -> int:
        return self.voucher.body.amount_fen

    @property
    def wallet_id(self) -> str:
        return self.voucher.body.wallet_id


def ledger_key(path: str | os.PathLike[str]) -> str:
    """Which terminal a kept voucher belongs to: its ledger file, symlinks resolved."""
    return os.path.realpath(path)


class Kept:
    """The process's kept vouchers, per ledger, and a log of those written since (for screens that announce them
    and for the gate, which gives a written ticket payment its pass). Thread-safe: the charge, the sync loop and
    the UI read it from their own threads; writes run one at a time, and reading never waits for a write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the maps below
        self._writing = threading.Lock()  # one write at a time
        self._kept: dict[str, dict[str, Unwritten]] = {}
        self._written: dict[str, list[Unwritten]] = {}
        self._seen: weakref.WeakKeyDictionary[object, dict[str, int]] = weakref.WeakKeyDictionary()

    def keep(self, ledger_path: str | os.PathLike[str], item: Unwritten) -> None:
        with self._lock:
            self._kept.setdefault(ledger_key(ledger_path), {})[item.voucher_id] = item

    def pending(self, ledger_path: str | os.PathLike[str]) -> list[Unwritten]:
        """The vouchers kept for this ledger, oldest first."""
        if not self._kept:  # the usual case, without a look at the file system
            return []
        with self._lock:
            return list(self._kept.get(ledger_key(ledger_path), {}).values())

    def count(self, ledger_path: str | os.PathLike[str]) -> tuple[int, int]:
        """(how many, their amount in fen) kept for this ledger."""
        items = self.pending(ledger_path)
        return len(items), sum(i.amount_fen for i in items)

    def written(self, ledger_path: str | os.PathLike[str]) -> list[Unwritten]:
        """Every voucher kept for this ledger and written since (in order; a reader remembers how many it saw)."""
        if not self._written:
            return []
        with self._lock:
            return list(self._written.get(ledger_key(ledger_path), []))

    def write(self, ledger: Ledger) -> tuple[list[Entry], EcnyError | None]:
        """Write the vouchers kept for ``ledger``: the entries written, and the error that stopped it (the disk
        still full: they stay kept), else None. Never raises for a storage failure. A voucher already on file (the
        card's next tap recorded it from its transaction log) is only forgotten here."""
        done: list[Entry] = []
        if not self._kept:
            return done, None
        key = ledger_key(ledger.path)
        with self._writing:
            for item in self.pending(ledger.path):
                try:
                    if ledger.payment(item.voucher_id) is not None:
                        self._forget(key, item)
                        continue
                    entry = record_payment(ledger, item.voucher, item.intent_seq, item.cert_der, item.issuer_der,
                                           item.discount)
                except Declined as exc:
                    if exc.reason is Reason.TERMINAL_ERROR:
                        return done, exc  # still cannot write: keep it (and the later ones) for the next chance
                    # Another voucher holds its counter (a clone's): the ledger will never take this one, and the
                    # operator catches the double spend when the other is settled.
                    self._forget(key, item)
                    continue
                except EcnyError as exc:  # e.g. a ledger that fails its head check: nothing is written
                    return done, exc
                except (sqlite3.Error, OSError) as exc:  # a read the disk refused
                    return done, StorageError(f"the ledger {ledger.path} cannot be read ({exc})", str(ledger.path))
                self._forget(key, item, written=True)
                done.append(entry)
        return done, None

    def _forget(self, key: str, item: Unwritten, written: bool = False) -> None:
        with self._lock:
            kept = self._kept.get(key, {})
            kept.pop(item.voucher_id, None)
            if not kept:
                self._kept.pop(key, None)
            if written:
                self._written.setdefault(key, []).append(item)

    def write_news(self, ledger: Ledger, reader: object) -> bool:
        """:meth:`write`, then whether any of this ledger's kept vouchers was written (here or elsewhere: a sync
        round) since ``reader`` last asked (the first time: since the process started)."""
        self.write(ledger)
        if not self._written and not self._seen:
            return False
        key = ledger_key(ledger.path)
        with self._lock:
            written = len(self._written.get(key, []))
            seen = self._seen.setdefault(reader, {})
            news, seen[key] = written != seen.get(key, 0), written
        return news

    def write_for(self, ledger_path: str | os.PathLike[str],
                  open_ledger: Callable[[], Ledger]) -> tuple[list[Entry], EcnyError | None]:
        """:meth:`write` for the ledger at ``ledger_path``, opened (``open_ledger()``) only when something is kept
        for it."""
        if not self.pending(ledger_path):
            return [], None
        try:
            ledger = open_ledger()
        except EcnyError as exc:  # the disk may refuse even the open
            return [], exc
        with ledger:
            return self.write(ledger)

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._kept.clear()
            self._written.clear()
            self._seen.clear()


KEPT = Kept()
