"""The hash chain: every entry carries the SHA-256 of its content and of the entry before it; :func:`verify_chain`
walks the chain, the derived open-intents table and the sealed head, and names everything that does not match."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Callable

from pos.ledger.model import CLOSING_KINDS, COLS, GENESIS, LedgerTampered, VerifyReport
from wallet import clock

# The exact JSON the hash chain is defined over (encoders built once: json.dumps builds one per call).
_HASH_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
DATA_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode  # an entry's data


def entry_hash(seq: int, time: str, kind: str, voucher_id: str | None, wallet_id: str | None,
               counter: int | None, amount_fen: int, data: str, prev_hash: str) -> str:
    """SHA-256 (hex) of the compact JSON list of an entry's fields, its data as text, ending with the previous hash."""
    blob = _HASH_JSON([seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data, prev_hash])
    return hashlib.sha256(blob.encode()).hexdigest()


_second: tuple[int, str] = (-1, "")  # the last second formatted (one tuple: threads read it whole)


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds and a Z (2026-11-27T09:25:40.123Z)."""
    global _second
    ms = clock.now_ms()
    sec, text = _second
    if ms // 1000 != sec:
        sec = ms // 1000
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = (sec, text)
    return f"{text}.{ms % 1000:03d}Z"


def verify_chain(conn: sqlite3.Connection, mac: Callable[[int, str], str]) -> VerifyReport:
    """Check the whole chain, the open-intents table and the head (``mac`` seals it); raise :class:`LedgerTampered`
    listing what is wrong."""
    problems: list[str] = []
    expected_prev = GENESIS
    expected_seq = 1
    n = 0
    intents: set[int] = set()
    closed: set[int] = set()
    for row in conn.execute(f"SELECT {COLS} FROM entries ORDER BY seq"):
        n += 1
        seq, at, kind, vid, wid, counter, amount, data, prev_hash, h = row
        if kind == "intent":
            intents.add(seq)
        elif kind in CLOSING_KINDS and '"intent":' in data:
            closed.add(json.loads(data)["intent"])
        if seq != expected_seq:
            problems.append(f"entries {expected_seq}..{seq - 1} are missing" if seq > expected_seq
                            else f"entry {seq} out of order")
        if prev_hash != expected_prev:
            problems.append(f"entry {seq} does not follow the entry before it (chain broken)")
        if entry_hash(seq, at, kind, vid, wid, counter, amount, data, prev_hash) != h:
            problems.append(f"entry {seq} ({kind}) was altered: its content does not match its hash")
        expected_prev = h
        expected_seq = seq + 1
    expected_open = intents - closed
    listed_open = {r[0] for r in conn.execute("SELECT seq FROM open_intents")}
    if expected_open != listed_open:
        problems.append("the open-intents table does not match the entries")
    head = conn.execute("SELECT seq, hash, mac FROM head WHERE id = 1").fetchone()
    head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS)
    if head is None and n:
        problems.append("the ledger head is missing")
    elif head is not None:
        if not hmac.compare_digest(head[2], mac(head[0], head[1])):
            problems.append("the ledger head was altered (its authentication code does not match)")
        if head_seq != expected_seq - 1 or head_hash != expected_prev:
            problems.append(f"the ledger ends at entry {expected_seq - 1} but its head says {head_seq}: "
                            "entries were removed or added behind its back")
    if problems:
        raise LedgerTampered("; ".join(problems))
    return VerifyReport(n, head_seq, head_hash)
