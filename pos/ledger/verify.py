"""Checking the ledger: the head before every write, and the whole chain, incrementally or in full.

- :func:`head_problems` is what every write transaction checks before it extends the ledger, in O(1): the head's
  authentication code, the last entry's own hash and its link to the entry before it, and that nothing follows it.
- :func:`verify_ledger` walks the chain, the derived open-intents table and the sealed head. Incrementally (the
  default) it starts from the verified checkpoint: a sealed record (seq, hash, the intents then open and a
  fingerprint of the entries up to it) of what an earlier verification found intact. Entries up to the checkpoint
  are not re-hashed; instead the checkpoint's entry must still carry the sealed hash and the entries up to it must
  still add up to the sealed fingerprint (their count, their amounts, an amount sum weighted by position and their
  total size), so a deleted, inserted or re-priced entry before the checkpoint is found too. Only entries after it
  are re-hashed. ``full=True`` re-hashes everything (``pos ledger verify``).
"""

from __future__ import annotations

import hmac
import json
import sqlite3
from dataclasses import dataclass

from pos.ledger.chain import entry_hash
from pos.ledger.model import CLOSING_KINDS, COLS, GENESIS, VerifyReport
from pos.ledger.seal import checkpoint_mac, head_mac

# What the checkpoint's fingerprint adds up over entries, in SQL (C speed, no hashing): their count, their amounts,
# their amounts weighted by position (a sum-preserving swap shows) and the size of their data plus their counters.
_FINGERPRINT_SQL = """SELECT count(*), coalesce(sum(amount_fen), 0), coalesce(sum(((seq % 997) + 1) * amount_fen), 0),
    coalesce(sum(length(data) + coalesce(counter, 0)), 0) FROM entries WHERE seq > ? AND seq <= ?"""
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1


def _fingerprint(conn: sqlite3.Connection, after: int = _LOWEST, upto: int = _HIGHEST) -> list[int]:
    """The fingerprint of the entries after ``after`` up to ``upto``."""
    return list(conn.execute(_FINGERPRINT_SQL, (after, upto)).fetchone())


@dataclass(frozen=True)
class Checkpoint:
    """What a verification found intact: entries 1..``seq`` ending in ``hash``, the intents open there and the
    fingerprint of those entries; ``mac`` seals it."""

    seq: int
    hash: str
    open_intents: str  # JSON list of seqs
    fingerprint: str  # JSON list of 4 integers
    mac: str

    @classmethod
    def seal(cls, key: bytes, seq: int, h: str, open_intents: set[int], fingerprint: list[int]) -> Checkpoint:
        opened, fp = json.dumps(sorted(open_intents)), json.dumps(fingerprint)
        return cls(seq, h, opened, fp, checkpoint_mac(key, seq, h, opened, fp))

    def authentic(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, checkpoint_mac(key, self.seq, self.hash, self.open_intents,
                                                            self.fingerprint))


def read_checkpoint(conn: sqlite3.Connection) -> Checkpoint | None:
    """The stored checkpoint, or None (none yet, or a ledger from before checkpoints opened read-only)."""
    try:
        row = conn.execute("SELECT seq, hash, open_intents, fingerprint, mac FROM verified WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return Checkpoint(*row) if row else None


def store_checkpoint(conn: sqlite3.Connection, cp: Checkpoint) -> None:
    """Keep ``cp`` unless the stored one is further on (inside the caller's write transaction)."""
    conn.execute("INSERT INTO verified (id, seq, hash, open_intents, fingerprint, mac) VALUES (1, ?, ?, ?, ?, ?) "
                 "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                 "open_intents = excluded.open_intents, fingerprint = excluded.fingerprint, mac = excluded.mac "
                 "WHERE excluded.seq > verified.seq",
                 (cp.seq, cp.hash, cp.open_intents, cp.fingerprint, cp.mac))


def head_problems(conn: sqlite3.Connection, key: bytes | None, key_problem: str | None,
                  head: tuple[int, str, str] | None) -> list[str]:
    """What is wrong with the end of the ledger a write is about to extend (O(1): the head row and the last two
    entries). Empty when the key is there, the head is authentic and ends the chain, or when the ledger is new and
    empty and has its key."""
    missing = [str(key_problem)] if key is None else []
    last = conn.execute(f"SELECT {COLS} FROM entries ORDER BY seq DESC LIMIT 2").fetchall()
    if head is None:
        return missing + (["the ledger head is missing"] if last else [])
    problems = missing
    if key is not None and not hmac.compare_digest(head[2], head_mac(key, head[0], head[1])):
        problems.append("the ledger head was altered (its authentication code does not match the key)")
    if not last:
        return [*problems, f"the ledger head says {head[0]} entries but the ledger has none"]
    top = last[0]
    if top[0] != head[0] or top[9] != head[1]:
        problems.append(f"the ledger ends at entry {top[0]} but its head says {head[0]}: "
                        "entries were removed or added behind its back")
    if entry_hash(*top[:9]) != top[9]:
        problems.append(f"entry {top[0]} ({top[2]}) was altered: its content does not match its hash")
    before_seq, before_hash = (last[1][0], last[1][9]) if len(last) > 1 else (0, GENESIS)
    if before_seq != top[0] - 1 or top[8] != before_hash:
        problems.append(f"entry {top[0]} does not follow the entry before it (chain broken)")
    return problems


def verify_ledger(conn: sqlite3.Connection, key: bytes | None, key_problem: str | None,
                  full: bool) -> tuple[VerifyReport, Checkpoint | None]:
    """Check the chain (from the checkpoint unless ``full``), the open-intents table and the head; read inside one
    snapshot (the caller's). Returns the report (``problems`` empty when intact) and, when intact and sealable, the
    checkpoint to store."""
    problems: list[str] = [str(key_problem)] if key is None else []
    expected_prev, expected_seq, before = GENESIS, 1, 0
    opened: set[int] = set()
    cp = None if full or key is None else read_checkpoint(conn)
    if cp is not None and not cp.authentic(key):  # type: ignore[arg-type]
        problems.append("the verified checkpoint was altered (its authentication code does not match the key)")
        cp = None
    whole: list[int] = []
    try:
        if cp is not None:
            at = conn.execute("SELECT hash FROM entries WHERE seq = ?", (cp.seq,)).fetchone()
            if at is None or at[0] != cp.hash:
                problems.append(f"entries up to the verified checkpoint (entry {cp.seq}) were rewritten or removed")
            sealed = json.loads(cp.fingerprint)
            if _fingerprint(conn, upto=cp.seq) != sealed:
                problems.append(f"entries up to the verified checkpoint (entry {cp.seq}) were changed: their count, "
                                "amounts or sizes differ from what was verified")
            expected_prev, expected_seq, before = cp.hash, cp.seq + 1, cp.seq
            opened = set(json.loads(cp.open_intents))
            whole = [a + b for a, b in zip(sealed, _fingerprint(conn, after=cp.seq), strict=True)]
        else:
            whole = _fingerprint(conn)
    except sqlite3.OperationalError as exc:  # e.g. amounts so large that their sum overflows
        problems.append(f"the amounts of the ledger cannot be added up ({exc})")
    n = 0
    closed: set[int] = set()
    for row in conn.execute(f"SELECT {COLS} FROM entries WHERE seq >= ? ORDER BY seq", (expected_seq,)):
        n += 1
        seq, at, kind, vid, wid, counter, amount, data, prev_hash, h = row
        if kind == "intent":
            opened.add(seq)
        elif kind in CLOSING_KINDS and '"intent":' in data:
            try:
                closed.add(json.loads(data)["intent"])
            except (ValueError, KeyError, TypeError):
                problems.append(f"entry {seq} ({kind}) has unreadable data")
        if seq != expected_seq:
            problems.append(f"entries {expected_seq}..{seq - 1} are missing" if seq > expected_seq
                            else f"entry {seq} out of order")
        if prev_hash != expected_prev:
            problems.append(f"entry {seq} does not follow the entry before it (chain broken)")
        try:
            intact = entry_hash(seq, at, kind, vid, wid, counter, amount, data, prev_hash) == h
        except (TypeError, ValueError):  # a column of a type no entry is written with (e.g. bytes)
            intact = False
        if not intact:
            problems.append(f"entry {seq} ({kind}) was altered: its content does not match its hash")
        expected_prev = h
        expected_seq = seq + 1
    if cp is None:
        # the walk started at entry 1; entries before it (seq < 1) would be missed by "seq >= 1"
        stray = conn.execute("SELECT count(*) FROM entries WHERE seq < 1").fetchone()[0]
        if stray:
            problems.append(f"{stray} entries carry a sequence number below 1")
    expected_open = opened - closed
    listed_open = {r[0] for r in conn.execute("SELECT seq FROM open_intents")}
    if expected_open != listed_open:
        problems.append("the open-intents table does not match the entries")
    head = conn.execute("SELECT seq, hash, mac FROM head WHERE id = 1").fetchone()
    head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS)
    last_seq = expected_seq - 1
    if head is None and last_seq:
        problems.append("the ledger head is missing")
    elif head is not None:
        if key is not None and not hmac.compare_digest(head[2], head_mac(key, head[0], head[1])):
            problems.append("the ledger head was altered (its authentication code does not match the key)")
        if head_seq != last_seq or head_hash != expected_prev:
            problems.append(f"the ledger ends at entry {last_seq} but its head says {head_seq}: "
                            "entries were removed or added behind its back")
    report = VerifyReport(before + n, head_seq, head_hash, problems, rehashed=n, full=cp is None)
    sealable = not problems and key is not None and last_seq > 0 and (cp is None or last_seq > cp.seq)
    return report, (Checkpoint.seal(key, last_seq, expected_prev, expected_open, whole)  # type: ignore[arg-type]
                    if sealable else None)
