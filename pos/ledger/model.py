"""What the ledger holds and answers: entries, open intents, sync status, a verification report; its errors.

Entry kinds: ``intent`` (written when a charge starts, before the card arrives: the amount and the challenge its PAY
will carry, which is what a torn tap or a crashed terminal needs to recover the voucher later), ``torn`` (the card
left after PAY was sent: names the wallet and counter), ``payment`` (an approved voucher), ``void`` (an intent
closed unpaid), ``unresolved`` (an intent that cannot be settled here), ``denylist`` (wallets refused from a version
on), ``settlement`` (the operator's answer for one voucher: data ``status`` settled | duplicate | rejected and
``reason``), ``sync`` (one completed sync: counts and the denylist version), ``refund`` and ``campaigns`` (the
instant-discount campaigns and offline shares a sync brought: :mod:`pos.payment.discounts`). A payment or intent
with an instant discount carries it in data ``discount`` (campaign id, gross, discount; its amount is the net).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wallet.card import china_day_text
from wallet.errors import EcnyError, StorageError
from wallet.voucher import Voucher

GENESIS = "0" * 64  # the previous hash of the first entry
CLOSING_KINDS = ("payment", "void", "unresolved")  # the kinds that close an intent (data ``intent``)
COLS = "seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data, prev_hash, hash"


class LedgerError(EcnyError):
    """The ledger cannot be opened or written."""


class LedgerStorageError(LedgerError, StorageError):
    """The disk refused a ledger write (full, read-only, I/O error): the transaction rolled back, nothing of it was
    written; the message names the file and what to do."""


class LedgerMissing(LedgerError):
    """There is no ledger at the path a read-only open was given (nothing is created)."""


class LedgerTampered(LedgerError):
    """The ledger's content does not match its hash chain, its sealed head or its verified checkpoint.

    ``problems`` lists what is wrong, one sentence each. Raised by :meth:`~pos.ledger.Ledger.verify` (its text is the
    problems joined by "; "), by every write on a broken ledger (nothing is written) and by what refuses to upload or
    report from one (:meth:`~pos.ledger.Ledger.check`: its text names the terminal and says what to do).
    """

    def __init__(self, problems: list[str], message: str | None = None) -> None:
        super().__init__(message or "; ".join(problems))
        self.problems = list(problems)


class LedgerKeyMissing(LedgerTampered):
    """The key that seals the ledger's head is missing or damaged while the ledger has entries: the head cannot be
    authenticated, so nothing is written and verification fails (a key is only ever created with a new ledger)."""


class PaymentRecorded(LedgerError):
    """A payment with this voucher id (wallet id and counter) is recorded already: one per voucher id."""

    def __init__(self, voucher_id: str | None) -> None:
        super().__init__(f"payment {voucher_id} is recorded already")
        self.voucher_id = voucher_id


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: str
    kind: str
    voucher_id: str | None
    wallet_id: str | None
    counter: int | None
    amount_fen: int
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "voucher_id": self.voucher_id, "wallet_id": self.wallet_id,
                "counter": self.counter, "amount_fen": self.amount_fen, "time": self.time, **self.data}


def payment_day(entry: Entry) -> str:
    """The day (YYYY-MM-DD, China Standard Time) of a payment entry's voucher timestamp: the day the card counted the
    payment in. The reports group by the business day (:func:`pos.sync.clockskew.payment_day`), which is this day
    on a terminal whose clock is right and this day corrected by the clock's error on one that is not."""
    return china_day_text(Voucher.decode(bytes.fromhex(entry.data["voucher"])).body.timestamp_ms)


def row_entry(row: tuple[Any, ...]) -> Entry:
    """An entry from a row of :data:`COLS`."""
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), row[8], row[9])


@dataclass(frozen=True, slots=True)
class OpenIntent:
    """A PAY the terminal prepared and has not closed: ``wallet_id``/``counter`` are known once a card tore it."""

    seq: int
    challenge: bytes
    amount_fen: int
    wallet_id: str | None
    counter: int | None
    owner: str
    created: str


@dataclass(frozen=True, slots=True)
class SyncStatus:
    pending_count: int
    pending_fen: int
    last_sync: str | None
    denylist_version: int


@dataclass
class VerifyReport:
    """What a verification found: ``entries`` in the ledger, its head, ``rehashed`` how many entries were re-hashed
    (all of them when ``full``, else those after the verified checkpoint)."""

    entries: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)
    rehashed: int = 0
    full: bool = True
