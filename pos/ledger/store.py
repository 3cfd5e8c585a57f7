"""The terminal's durable ledger: SQLite through sqlite-utils, WAL, ``synchronous=FULL``, append-only, hash-chained.

Every entry carries the SHA-256 of its content and of the entry before it; the head (last seq and hash) is kept
with an HMAC under a key stored beside the database, so :meth:`Ledger.verify` finds any edit, insertion or deletion
made behind the ledger's back, including a cut-off tail. Triggers refuse UPDATE and DELETE of entries. A payment
is recorded at most once per voucher id (a partial unique index on the wallet id and counter it is made of), and
settlement state changes are new entries.

Entry kinds: ``intent`` (written when a charge starts, before the card arrives: the amount and the challenge its PAY
will carry, which is what a torn tap or a crashed terminal needs to recover the voucher later), ``torn`` (the card
left after PAY was sent: names the wallet and counter), ``payment`` (an approved voucher), ``void`` (an intent
closed unpaid), ``unresolved`` (an intent that cannot be settled here), ``denylist`` (wallets refused from a version
on), ``settlement`` (the operator's answer for one voucher: data ``status`` settled | duplicate | rejected and
``reason``), ``sync`` (one completed sync: counts and the denylist version) and ``refund``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlite_utils
from filelock import FileLock

from wallet.errors import EcnyError
from wallet.ids import parse_voucher_id
from wallet.ids import voucher_id as make_voucher_id

GENESIS = "0" * 64
AUTOCHECKPOINT_PAGES = 10_000
IDLE_CHECKPOINT_COMMITS = 100
MIGRATIONS = sqlite_utils.Migrations("ecny-pos-ledger")


class LedgerError(EcnyError):
    """The ledger cannot be opened or written."""


class LedgerTampered(LedgerError):
    """The ledger's content does not match its hash chain or its authenticated head."""


@MIGRATIONS()
def m001_entries(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE entries (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            kind TEXT NOT NULL,
            voucher_id TEXT,
            wallet_id TEXT,
            counter INTEGER,
            amount_fen INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""")
    db.execute("CREATE UNIQUE INDEX entries_one_payment ON entries(voucher_id) WHERE kind = 'payment'")
    db.execute("CREATE INDEX entries_wallet ON entries(wallet_id, kind, counter)")
    db.execute("CREATE INDEX entries_kind ON entries(kind, time)")
    db.execute("""CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
                  BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END""")
    db.execute("""CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
                  BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END""")
    db.execute("""CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
                  hash TEXT NOT NULL, mac TEXT NOT NULL)""")
    db.execute("CREATE TABLE certificates (fingerprint TEXT PRIMARY KEY, der BLOB NOT NULL)")
    # Derived from the entries (verify() checks it): intents not yet closed, so a tap finds them in O(1).
    db.execute("""CREATE TABLE open_intents (seq INTEGER PRIMARY KEY, challenge TEXT NOT NULL,
                  amount_fen INTEGER NOT NULL, wallet_id TEXT, counter INTEGER, owner TEXT NOT NULL,
                  created TEXT NOT NULL)""")


@MIGRATIONS()
def m002_voucher_index(db: sqlite_utils.Database) -> None:
    """Settlement and refund entries are looked up by voucher id (the outbox, sync status, reports)."""
    db.execute("CREATE INDEX entries_voucher ON entries(voucher_id, kind)")


@MIGRATIONS()
def m003_certificates_without_rowid(db: sqlite_utils.Database) -> None:
    """Certificates keyed by fingerprint in one b-tree (was a rowid table plus its key's index): a payment that
    brings a new card's certificate writes one page fewer."""
    db.execute("CREATE TABLE certificates_new (fingerprint TEXT PRIMARY KEY, der BLOB NOT NULL) WITHOUT ROWID")
    db.execute("INSERT INTO certificates_new (fingerprint, der) SELECT fingerprint, der FROM certificates")
    db.execute("DROP TABLE certificates")
    db.execute("ALTER TABLE certificates_new RENAME TO certificates")


@MIGRATIONS()
def m004_lean_indexes(db: sqlite_utils.Database) -> None:
    """Fewer index pages per commit: one (kind, wallet_id, counter) index serves what entries_kind and
    entries_wallet served, and voucher lookups of settlements and refunds get partial indexes of their own (a payment
    is found through the unique index of payments). A payment now writes three index pages fewer, an intent two."""
    db.execute("CREATE INDEX entries_kind_wallet ON entries(kind, wallet_id, counter)")
    db.execute("CREATE INDEX entries_settlement ON entries(voucher_id) WHERE kind = 'settlement'")
    db.execute("CREATE INDEX entries_refund ON entries(voucher_id) WHERE kind = 'refund'")
    for name in ("entries_kind", "entries_wallet", "entries_voucher"):
        db.execute(f"DROP INDEX {name}")


@MIGRATIONS()
def m005_payments_by_wallet_and_counter(db: sqlite_utils.Database) -> None:
    """A payment is unique by (wallet id, counter), what its voucher id is made of: one unique index serves
    idempotency, the replay check (a wallet's highest counter) and lookups by voucher id, and the denylist gets a
    small index of its own. An intent now writes no index page, a payment one (it wrote two)."""
    db.execute("CREATE UNIQUE INDEX entries_payment ON entries(wallet_id, counter) WHERE kind = 'payment'")
    db.execute("CREATE INDEX entries_denylist ON entries(wallet_id) WHERE kind = 'denylist'")
    db.execute("DROP INDEX entries_one_payment")
    db.execute("DROP INDEX entries_kind_wallet")


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


CLOSING_KINDS = ("payment", "void", "unresolved")


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
    entries: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)


# The exact JSON the hash chain is defined over (encoders built once: json.dumps builds one per call).
_HASH_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_DATA_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def _entry_hash(seq: int, time: str, kind: str, voucher_id: str | None, wallet_id: str | None,
                counter: int | None, amount_fen: int, data: str, prev_hash: str) -> str:
    blob = _HASH_JSON([seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data, prev_hash])
    return hashlib.sha256(blob.encode()).hexdigest()


_second: tuple[int, str] = (-1, "")  # the last second formatted (one tuple: threads read it whole)


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds and a Z (2026-11-27T09:25:40.123Z)."""
    global _second
    ms = time.time_ns() // 1_000_000
    sec, text = _second
    if ms // 1000 != sec:
        sec = ms // 1000
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = (sec, text)
    return f"{text}.{ms % 1000:03d}Z"


_COLS = "seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data, prev_hash, hash"


def _row_entry(row: tuple[Any, ...]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), row[8], row[9])


class Ledger:
    """One terminal's ledger file. Safe for several processes; one connection per thread, or one shared by threads
    that take turns (a running terminal's :class:`pos.payment.checkout.Checkout` holds a lock around each charge)."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key if key is not None else self._load_key()
        try:
            conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            # Checkpoints belong between taps (see checkpoint()); this is only the backstop (about 40 MB of WAL).
            self.db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            with FileLock(str(self.path) + ".lock", timeout=60):
                MIGRATIONS.apply(self.db)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        self.conn = conn
        self._commits = 0  # since the last idle-time checkpoint
        self._known_certs: set[str] = set()  # committed or about to be: a rolled-back insert is re-done below
        # The open-intents table as this connection last saw it, good while no other connection commits (PRAGMA
        # data_version): a tap then asks memory, not the database. Changes of an open transaction wait in
        # _intent_changes and reach it on commit.
        self._intents: dict[int, OpenIntent] | None = None
        self._intents_version = -1
        self._intent_changes: list[tuple[str, int, OpenIntent | None]] = []

    def _load_key(self) -> bytes:
        key_path = self.path.with_suffix(".key")
        if not key_path.exists():
            with FileLock(str(key_path) + ".lock", timeout=30):
                if not key_path.exists():
                    from wallet.certs import write_atomic

                    write_atomic(key_path, secrets.token_bytes(32), mode=0o600)
        key = key_path.read_bytes()
        if len(key) != 32:
            raise LedgerError(f"ledger key {key_path} is damaged")
        return key

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self, every: int = IDLE_CHECKPOINT_COMMITS) -> bool:
        """Copy the write-ahead log into the database once ``every`` commits have gone by. Call it while the
        terminal is idle (between taps): a checkpoint's fsyncs then never fall inside a customer's tap."""
        if self._commits < every or self.conn.in_transaction:
            return False
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._commits = 0
        return True

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mac(self, seq: int, h: str) -> str:
        return hmac.digest(self._key, f"{seq}:{h}".encode(), "sha256").hex()

    # -- writing ----------------------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a write transaction that holds the write lock until commit (serializes writers across processes)."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self._commits += 1
        changes, self._intent_changes = self._intent_changes, []
        if self._intents is not None:
            for op, seq, intent in changes:
                if op == "put":
                    self._intents[seq] = intent  # type: ignore[assignment]
                elif op == "torn" and seq in self._intents:
                    self._intents[seq] = intent or self._intents[seq]
                else:
                    self._intents.pop(seq, None)

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._known_certs.clear()
        self._intent_changes.clear()

    def _append(self, kind: str, *, voucher_id: str | None = None, wallet_id: str | None = None,
                counter: int | None = None, amount_fen: int = 0, data: dict[str, Any] | None = None,
                time: str | None = None) -> Entry:
        """Append inside an open transaction."""
        if kind == "payment" and (wallet_id is None or counter is None or voucher_id != make_voucher_id(wallet_id,
                                                                                                          counter)):
            raise LedgerError("a payment's voucher id is made of its wallet id and counter")
        row = self.conn.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
        prev_seq, prev_hash = row if row else (0, GENESIS)
        seq = prev_seq + 1
        time = time or utc_now()
        data_text = _DATA_JSON(data or {})
        h = _entry_hash(seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data_text, prev_hash)
        self.conn.execute(f"INSERT INTO entries ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data_text, prev_hash, h))
        self.conn.execute("INSERT INTO head (id, seq, hash, mac) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                          "SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
                          (seq, h, self._mac(seq, h)))
        self._track_intent(seq, time, kind, wallet_id, counter, amount_fen, data or {})
        return Entry(seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data or {}, prev_hash, h)

    def _track_intent(self, seq: int, time: str, kind: str, wallet_id: str | None, counter: int | None,
                      amount_fen: int, data: dict[str, Any]) -> None:
        """Keep the open-intents table in step with the entries, in the same transaction."""
        if kind == "intent":
            self.conn.execute("INSERT INTO open_intents (seq, challenge, amount_fen, owner, created) "
                              "VALUES (?, ?, ?, ?, ?)", (seq, data["challenge"], amount_fen, data["owner"], time))
            self._intent_changes.append(("put", seq, OpenIntent(seq, bytes.fromhex(data["challenge"]), amount_fen,
                                                                 None, None, data["owner"], time)))
        elif kind == "torn":
            self.conn.execute("UPDATE open_intents SET wallet_id = ?, counter = ? WHERE seq = ?",
                              (wallet_id, counter, data["intent"]))
            known = self._intents.get(data["intent"]) if self._intents is not None else None
            self._intent_changes.append(("torn", data["intent"], known and replace(known, wallet_id=wallet_id,
                                                                                   counter=counter)))
        elif kind in CLOSING_KINDS and "intent" in data:
            self.conn.execute("DELETE FROM open_intents WHERE seq = ?", (data["intent"],))
            self._intent_changes.append(("close", data["intent"], None))

    def append(self, kind: str, **fields: Any) -> Entry:
        """Append one entry durably (its own transaction)."""
        self.begin()
        try:
            entry = self._append(kind, **fields)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return entry

    def add_certificate(self, fingerprint: str, der: bytes) -> None:
        """Remember a certificate by fingerprint, inside the caller's transaction (issuers are stored once)."""
        if fingerprint in self._known_certs:
            return
        self.conn.execute("INSERT INTO certificates (fingerprint, der) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          (fingerprint, der))
        if len(self._known_certs) < 64:
            self._known_certs.add(fingerprint)

    def certificate(self, fingerprint: str) -> bytes | None:
        row = self.conn.execute("SELECT der FROM certificates WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row else None

    # -- reading ----------------------------------------------------------------------------------------------------
    def entries(self, kind: str | None = None, since_seq: int = 0, wallet_id: str | None = None) -> Iterator[Entry]:
        sql = f"SELECT {_COLS} FROM entries WHERE seq > ?"
        args: list[Any] = [since_seq]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if wallet_id:
            sql += " AND wallet_id = ?"
            args.append(wallet_id)
        for row in self.conn.execute(sql + " ORDER BY seq", args):
            yield _row_entry(row)

    def entry(self, seq: int) -> Entry | None:
        row = self.conn.execute(f"SELECT {_COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
        return _row_entry(row) if row else None

    def refund_count(self, voucher_id: str) -> int:
        """How many refunds of the voucher this terminal has recorded."""
        return self.conn.execute("SELECT COUNT(*) FROM entries WHERE kind = 'refund' AND voucher_id = ?",
                                 (voucher_id,)).fetchone()[0]

    def payment(self, voucher_id: str) -> Entry | None:
        parts = parse_voucher_id(voucher_id)
        if parts is None:
            return None
        row = self.conn.execute(f"SELECT {_COLS} FROM entries WHERE kind = 'payment' AND wallet_id = ? "
                                "AND counter = ?", parts).fetchone()
        return _row_entry(row) if row else None

    def max_counter(self, wallet_id: str) -> int:
        """The highest transaction counter this terminal has recorded a payment for (0 if none)."""
        return self.wallet_standing(wallet_id)[1]

    def open_intents(self, wallet_id: str | None = None) -> list[OpenIntent]:
        """PAYs prepared and not closed (oldest first); with ``wallet_id``, those torn on that wallet.

        Read from memory while no other connection has committed since this one last read the table (one
        ``PRAGMA data_version``, no table read); inside a transaction, from the table."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self.conn.in_transaction:
            intents = self._read_intents()
        else:
            if self._intents is None or version != self._intents_version:
                self._intents = self._read_intents()
                self._intents_version = version
            intents = self._intents
        return [i for i in intents.values() if wallet_id is None or i.wallet_id == wallet_id]

    def _read_intents(self) -> dict[int, OpenIntent]:
        rows = self.conn.execute("SELECT seq, challenge, amount_fen, wallet_id, counter, owner, created "
                                 "FROM open_intents ORDER BY seq")
        return {r[0]: OpenIntent(r[0], bytes.fromhex(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows}

    def denylist_version(self) -> int:
        row = self.conn.execute(
            "SELECT MAX(CAST(json_extract(data, '$.version') AS INTEGER)) FROM entries WHERE kind = 'denylist'"
        ).fetchone()
        return row[0] or 0

    def is_denylisted(self, wallet_id: str) -> bool:
        return self.wallet_standing(wallet_id)[0]

    def wallet_standing(self, wallet_id: str) -> tuple[bool, int]:
        """Whether the wallet is denylisted and the highest counter recorded for it: one query, for a tap."""
        row = self.conn.execute(
            "SELECT (SELECT json_extract(data, '$.action') FROM entries WHERE kind = 'denylist' AND wallet_id = ?1 "
            "ORDER BY seq DESC LIMIT 1), "
            "(SELECT MAX(counter) FROM entries WHERE wallet_id = ?1 AND kind = 'payment')", (wallet_id,)).fetchone()
        return row[0] == "add", row[1] or 0

    def apply_denylist(self, version: int, added: list[str], removed: list[str] = ()) -> None:  # type: ignore[assignment]
        """Record a denylist change as entries (one per wallet), all in one transaction."""
        self.begin()
        try:
            for w in added:
                self._append("denylist", wallet_id=w, data={"version": version, "action": "add"})
            for w in removed:
                self._append("denylist", wallet_id=w, data={"version": version, "action": "remove"})
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def outbox(self, limit: int | None = None) -> list[Entry]:
        """Payments not yet answered by the operator (no ``settlement`` entry): what sync must upload."""
        sql = f"""SELECT {_COLS} FROM entries p WHERE p.kind = 'payment' AND NOT EXISTS
                  (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)
                  ORDER BY p.seq"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_row_entry(r) for r in self.conn.execute(sql)]

    def sync_status(self) -> SyncStatus:
        """What the status bar shows: vouchers and money waiting for settlement, last sync, denylist version."""
        pending = self.conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM entries p WHERE p.kind = 'payment' AND NOT EXISTS
               (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)""").fetchone()
        last = self.conn.execute("SELECT time FROM entries WHERE kind = 'sync' ORDER BY seq DESC LIMIT 1").fetchone()
        return SyncStatus(pending[0], pending[1], last[0] if last else None, self.denylist_version())

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    # -- verification -----------------------------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the whole chain and the authenticated head; raise :class:`LedgerTampered` listing what is wrong."""
        problems: list[str] = []
        expected_prev = GENESIS
        expected_seq = 1
        n = 0
        intents: set[int] = set()
        closed: set[int] = set()
        for row in self.conn.execute(f"SELECT {_COLS} FROM entries ORDER BY seq"):
            n += 1
            seq, time, kind, vid, wid, counter, amount, data, prev_hash, h = row
            if kind == "intent":
                intents.add(seq)
            elif kind in CLOSING_KINDS and '"intent":' in data:
                closed.add(json.loads(data)["intent"])
            if seq != expected_seq:
                problems.append(f"entries {expected_seq}..{seq - 1} are missing" if seq > expected_seq
                                else f"entry {seq} out of order")
            if prev_hash != expected_prev:
                problems.append(f"entry {seq} does not follow the entry before it (chain broken)")
            if _entry_hash(seq, time, kind, vid, wid, counter, amount, data, prev_hash) != h:
                problems.append(f"entry {seq} ({kind}) was altered: its content does not match its hash")
            expected_prev = h
            expected_seq = seq + 1
        expected_open = intents - closed
        listed_open = {r[0] for r in self.conn.execute("SELECT seq FROM open_intents")}
        if expected_open != listed_open:
            problems.append("the open-intents table does not match the entries")
        head = self.conn.execute("SELECT seq, hash, mac FROM head WHERE id = 1").fetchone()
        head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS)
        if head is None and n:
            problems.append("the ledger head is missing")
        elif head is not None:
            if not hmac.compare_digest(head[2], self._mac(head[0], head[1])):
                problems.append("the ledger head was altered (its authentication code does not match)")
            if head_seq != expected_seq - 1 or head_hash != expected_prev:
                problems.append(f"the ledger ends at entry {expected_seq - 1} but its head says {head_seq}: "
                                "entries were removed or added behind its back")
        if problems:
            raise LedgerTampered("; ".join(problems))
        return VerifyReport(n, head_seq, head_hash)
