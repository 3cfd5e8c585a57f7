"""The ledger's schema, as sqlite-utils migrations applied in order when a ledger is opened."""

from __future__ import annotations

import sqlite_utils

MIGRATIONS = sqlite_utils.Migrations("ecny-pos-ledger")


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


@MIGRATIONS()
def m006_verified_checkpoint(db: sqlite_utils.Database) -> None:
    """The verified checkpoint (:mod:`pos.ledger.verify`): how far an earlier verification found the ledger intact,
    sealed under the ledger key, so the check before every sync re-hashes only the entries after it."""
    db.execute("""CREATE TABLE verified (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
                  hash TEXT NOT NULL, open_intents TEXT NOT NULL, fingerprint TEXT NOT NULL, mac TEXT NOT NULL)""")


@MIGRATIONS()
def m007_unresolved_entries(db: sqlite_utils.Database) -> None:
    """What sync reports to the operator: the ``unresolved`` entries, found without reading the whole ledger (a
    partial index: no other entry writes a page of it)."""
    db.execute("CREATE INDEX entries_unresolved ON entries(seq) WHERE kind = 'unresolved'")


@MIGRATIONS()
def m008_campaigns_index(db: sqlite_utils.Database) -> None:
    """The latest ``campaigns`` entry (instant discounts: the campaigns and offline shares of the last sync) is read
    when every charge starts: a partial index finds it at once (other entries never touch it)."""
    db.execute("CREATE INDEX entries_campaigns ON entries(seq) WHERE kind = 'campaigns'")
