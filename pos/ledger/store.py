"""The terminal's durable ledger: SQLite through sqlite-utils, WAL, ``synchronous=FULL``, append-only, hash-chained.

Every entry carries the SHA-256 of its content and of the entry before it (:mod:`pos.ledger.chain`); the head (last
seq and hash) is kept with an HMAC under a key stored beside the database (:mod:`pos.ledger.seal`), so
:meth:`Ledger.verify` finds any edit, insertion or deletion made behind the ledger's back, including a cut-off tail.
Triggers refuse UPDATE and DELETE of entries. A payment is recorded at most once per voucher id (a partial unique
index on the wallet id and counter it is made of), and settlement state changes are new entries. Writes go through
:meth:`Ledger.transaction` (several entries at once) or :meth:`Ledger.append` (one entry, its own transaction);
the fleet simulator alone groups many transactions into one durable commit (:meth:`Ledger.batch`).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils
from filelock import FileLock

from pos.ledger.batch import Batch
from pos.ledger.chain import DATA_JSON, entry_hash, utc_now
from pos.ledger.intents import OpenIntents
from pos.ledger.model import (
    COLS,
    GENESIS,
    Entry,
    LedgerError,
    LedgerKeyMissing,
    LedgerMissing,
    LedgerStorageError,
    LedgerTampered,
    OpenIntent,
    PaymentRecorded,
    VerifyReport,
    row_entry,
)
from pos.ledger.queries import SettlementQueries
from pos.ledger.schema import MIGRATIONS
from pos.ledger.seal import create_key, head_mac, key_path, read_key
from pos.ledger.transaction import Transaction
from pos.ledger.verify import head_problems, store_checkpoint, verify_ledger
from wallet.ids import parse_voucher_id
from wallet.ids import voucher_id as make_voucher_id

AUTOCHECKPOINT_PAGES = 10_000
IDLE_CHECKPOINT_COMMITS = 100


class Ledger(SettlementQueries):
    """One terminal's ledger file. Safe for several processes; one connection per thread, or one shared by threads
    that take turns (a running terminal's :class:`pos.payment.checkout.Checkout` holds a lock around each charge)."""

    def __init__(self, path: Path, key: bytes | None = None, *, terminal_id: str | None = None) -> None:
        """Open the ledger at ``path`` to write, creating it (and its key) when it is new. The key of a ledger that
        has entries is never created: without it the ledger opens, but every write and every verification fails
        with :class:`LedgerKeyMissing`. ``terminal_id`` names the ledger in the errors of :meth:`check`."""
        self.path = Path(path)
        self.terminal_id = terminal_id
        self.readonly = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            db = sqlite_utils.Database(conn)
            # One opener at a time (across processes) switches a new ledger to WAL and migrates it: two first opens
            # racing to set the journal mode would otherwise meet "database is locked" (no busy wait there).
            with FileLock(str(self.path) + ".lock", timeout=60):
                db.execute("PRAGMA journal_mode=WAL")
                MIGRATIONS.apply(db)
            db.execute("PRAGMA synchronous=FULL")
            # Checkpoints belong between taps (see checkpoint()); this is only the backstop (about 40 MB of WAL).
            db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            is_new = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM head) AND NOT EXISTS "
                                  "(SELECT 1 FROM entries)").fetchone()[0]
        except sqlite3.OperationalError as exc:  # the disk: full, read-only, I/O error
            raise LedgerStorageError(f"cannot open ledger {self.path} ({exc}): free some space on its disk, or make "
                                     "it writable, then try again", str(self.path)) from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from exc
        self._key, self._key_problem = (key, None) if key is not None else read_key(self.path)
        if self._key is None and is_new and not key_path(self.path).exists():
            create_key(self.path)  # a new, empty ledger: the only time a key is made
            self._key, self._key_problem = read_key(self.path)
        self._setup(conn)

    @classmethod
    def open_readonly(cls, path: Path, key: bytes | None = None, *, terminal_id: str | None = None) -> Ledger:
        """Open an existing ledger to read only: creates no file, directory or key and modifies nothing (a copy on
        read-only media works). A ledger not in use (no write-ahead log beside it) is opened ``immutable``; one in
        use is opened ``mode=ro`` and shares the running terminal's write-ahead index. Raises
        :class:`LedgerMissing` when there is no ledger at ``path``; a missing key is reported by :meth:`verify`."""
        path = Path(path)
        if not path.is_file():
            raise LedgerMissing(f"there is no ledger at {path}")
        in_use = path.with_name(path.name + "-wal").exists()
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro" + ("" if in_use else "&immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            conn.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot read ledger {path}: {exc}") from exc
        self = cls.__new__(cls)
        self.path, self.terminal_id, self.readonly = path, terminal_id, True
        self._key, self._key_problem = (key, None) if key is not None else read_key(path)
        self._setup(conn)
        return self

    def _setup(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._commits = 0  # since the last idle-time checkpoint
        self._known_certs: set[str] = set()  # committed or about to be: a rolled-back insert is re-done below
        self._intents = OpenIntents(conn)
        self._head_checked = False  # this transaction has checked the head it extends
        # the head this connection last sealed and the database's data_version right after: while no other connection
        # has committed since, the head a write extends is the one this connection wrote and checked
        self._sealed: tuple[int, str, int] | None = None
        self._written: tuple[int, str] | None = None
        self._in_batch = False  # transactions are savepoints of a batch (pos.ledger.batch)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self, every: int = IDLE_CHECKPOINT_COMMITS) -> bool:
        """Copy the write-ahead log into the database once ``every`` commits have gone by. Call it while the
        terminal is idle (between taps): a checkpoint's fsyncs then never fall inside a customer's tap."""
        if self._commits < every or self._conn.in_transaction:
            return False
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._commits = 0
        return True

    def limit_cache(self, kib: int) -> None:
        """Cap this connection's page cache at ``kib`` KiB (SQLite's default is 2 MiB): for a process that holds
        hundreds of ledgers open, the fleet simulator's shards."""
        self._conn.execute(f"PRAGMA cache_size = -{max(1, int(kib))}")

    def durability(self) -> tuple[str, int]:
        """This connection's journal mode and synchronous level (``("wal", 2)``: WAL, FULL)."""
        return (self._conn.execute("PRAGMA journal_mode").fetchone()[0],
                self._conn.execute("PRAGMA synchronous").fetchone()[0])

    # -- writing ----------------------------------------------------------------------------------------------------
    def transaction(self) -> Transaction:
        """A write transaction: ``with ledger.transaction() as tx: tx.append(...)`` commits durably when the block
        ends and rolls back if it raises."""
        return Transaction(self)

    def batch(self) -> Batch:
        """The fleet simulator's batch mode, never a terminal's: ``with ledger.batch() as b:`` groups the
        transactions of many taps into one durable commit (:mod:`pos.ledger.batch` says what that gives up)."""
        return Batch(self)

    def append(self, kind: str, **fields: Any) -> Entry:
        """Append one entry durably (its own transaction); fields as :meth:`Transaction.append`."""
        with Transaction(self) as tx:
            return tx.append(kind, **fields)

    def _begin(self) -> None:
        if self.readonly:
            raise LedgerError(f"the ledger {self.path} is open read-only")
        self._head_checked = False
        self._conn.execute("SAVEPOINT tx" if self._in_batch else "BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("RELEASE tx" if self._in_batch else "COMMIT")
        if self._written is not None:
            self._sealed = (*self._written, self._conn.execute("PRAGMA data_version").fetchone()[0])
            self._written = None
        self._commits += 1
        self._intents.committed()

    def _rollback(self) -> None:
        if self._in_batch:
            self._conn.execute("ROLLBACK TO tx")
            self._conn.execute("RELEASE tx")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._known_certs.clear()
        self._intents.rolled_back()
        self._written = None

    def _append(self, kind: str, *, voucher_id: str | None, wallet_id: str | None, counter: int | None,
                amount_fen: int, data: dict[str, Any] | None, time: str | None) -> Entry:
        """Append inside an open transaction: the entry, the sealed head, the open-intents table."""
        if kind == "payment" and (wallet_id is None or counter is None or voucher_id != make_voucher_id(wallet_id,
                                                                                                          counter)):
            raise LedgerError("a payment's voucher id is made of its wallet id and counter")
        row = self._conn.execute("SELECT seq, hash, mac FROM head WHERE id = 1").fetchone()
        if not self._head_checked and not self._extends_own_seal(row):  # the first append of a transaction:
            problems = head_problems(self._conn, self._key, self._key_problem, row)
            if problems:
                raise self._refusal(problems, "nothing was written")
        self._head_checked = True
        prev_seq, prev_hash = (row[0], row[1]) if row else (0, GENESIS)
        seq = prev_seq + 1
        time = time or utc_now()
        data_text = DATA_JSON(data or {})
        h = entry_hash(seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data_text, prev_hash)
        try:
            self._conn.execute(f"INSERT INTO entries ({COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                               (seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data_text, prev_hash, h))
        except sqlite3.IntegrityError as exc:
            if kind == "payment":  # the unique index of payments: this voucher id is recorded already
                raise PaymentRecorded(voucher_id) from exc
            raise
        self._conn.execute("INSERT INTO head (id, seq, hash, mac) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                           "SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
                           (seq, h, head_mac(self._key, seq, h)))  # type: ignore[arg-type]
        self._intents.track(seq, time, kind, wallet_id, counter, amount_fen, data or {})
        self._written = (seq, h)
        return Entry(seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data or {}, prev_hash, h)

    def _extends_own_seal(self, head: tuple[int, str, str] | None) -> bool:
        """The head is the one this connection sealed (and checked) in its last commit, and no other connection has
        committed since: the full O(1) check of :func:`head_problems` would read what this connection wrote."""
        sealed = self._sealed
        return (sealed is not None and head is not None and head[0] == sealed[0] and head[1] == sealed[1]
                and self._conn.execute("PRAGMA data_version").fetchone()[0] == sealed[2])

    def _add_certificate(self, fingerprint: str, der: bytes) -> None:
        if fingerprint in self._known_certs:
            return
        self._conn.execute("INSERT INTO certificates (fingerprint, der) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           (fingerprint, der))
        if len(self._known_certs) < 64:
            self._known_certs.add(fingerprint)

    # -- reading ----------------------------------------------------------------------------------------------------
    def certificate(self, fingerprint: str) -> bytes | None:
        """A certificate recorded with a payment, by fingerprint."""
        row = self._conn.execute("SELECT der FROM certificates WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row else None

    def entries(self, kind: str | None = None, since_seq: int = 0, wallet_id: str | None = None) -> Iterator[Entry]:
        """Entries after ``since_seq`` in order, optionally of one kind and one wallet."""
        sql = f"SELECT {COLS} FROM entries WHERE seq > ?"
        args: list[Any] = [since_seq]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if wallet_id:
            sql += " AND wallet_id = ?"
            args.append(wallet_id)
        for row in self._conn.execute(sql + " ORDER BY seq", args):
            yield row_entry(row)

    def entry(self, seq: int) -> Entry | None:
        row = self._conn.execute(f"SELECT {COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
        return row_entry(row) if row else None

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def payment(self, voucher_id: str) -> Entry | None:
        """The payment entry of a voucher id, or None (also for text that is no voucher id)."""
        parts = parse_voucher_id(voucher_id)
        if parts is None:
            return None
        row = self._conn.execute(f"SELECT {COLS} FROM entries WHERE kind = 'payment' AND wallet_id = ? "
                                 "AND counter = ?", parts).fetchone()
        return row_entry(row) if row else None

    def max_counter(self, wallet_id: str) -> int:
        """The highest transaction counter this terminal has recorded a payment for (0 if none)."""
        return self.wallet_standing(wallet_id)[1]

    def is_denylisted(self, wallet_id: str) -> bool:
        return self.wallet_standing(wallet_id)[0]

    def wallet_standing(self, wallet_id: str) -> tuple[bool, int]:
        """Whether the wallet is denylisted and the highest counter recorded for it: one query, for a tap."""
        row = self._conn.execute(
            "SELECT (SELECT json_extract(data, '$.action') FROM entries WHERE kind = 'denylist' AND wallet_id = ?1 "
            "ORDER BY seq DESC LIMIT 1), "
            "(SELECT MAX(counter) FROM entries WHERE wallet_id = ?1 AND kind = 'payment')", (wallet_id,)).fetchone()
        return row[0] == "add", row[1] or 0

    def open_intents(self, wallet_id: str | None = None) -> list[OpenIntent]:
        """PAYs prepared and not closed (oldest first); with ``wallet_id``, those torn on that wallet. Served from
        memory while no other connection has committed (see :mod:`pos.ledger.intents`)."""
        return self._intents.current(wallet_id)

    # -- verification -----------------------------------------------------------------------------------------------
    def verify(self, full: bool = False) -> VerifyReport:
        """Check the chain, the open-intents table and the sealed head; raise :class:`LedgerTampered` (or
        :class:`LedgerKeyMissing`) listing what is wrong.

        Incremental by default: entries up to the verified checkpoint are checked against its seal (not re-hashed),
        those after it are re-hashed; ``full`` re-hashes every entry. A writable ledger found intact moves the
        checkpoint to its end. Reads one snapshot, so writers may go on meanwhile."""
        own = not self._conn.in_transaction
        if own:
            self._conn.execute("BEGIN")
        try:
            report, checkpoint = verify_ledger(self._conn, self._key, self._key_problem, full)
        finally:
            if own:
                self._conn.execute("COMMIT")
        if report.problems:
            cls = LedgerKeyMissing if self._key is None else LedgerTampered
            raise cls(report.problems)
        if checkpoint is not None and own and not self.readonly:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                store_checkpoint(self._conn, checkpoint)
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError:  # only a shortcut for the next verification: never fail for it
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        return report

    def check(self) -> VerifyReport:
        """Verify (incrementally) before using the ledger's content for money: sync, reports. On failure raise
        :class:`LedgerTampered` (:class:`LedgerKeyMissing`) naming the terminal, what is wrong and what to do."""
        try:
            return self.verify()
        except LedgerTampered as exc:
            raise self._refusal(exc.problems, None) from exc

    def _refusal(self, problems: list[str], done: str | None) -> LedgerTampered:
        name = f"the ledger of {self.terminal_id}" if self.terminal_id else f"the ledger {self.path}"
        export = f"pos ledger export --terminal {self.terminal_id or 'TID'} --csv FILE"
        message = (f"{name} failed verification: {'; '.join(problems)}; {done + ': ' if done else ''}"
                   f"export it with `{export}` and contact the operator")
        cls = LedgerKeyMissing if self._key is None else LedgerTampered
        return cls(problems, message)
