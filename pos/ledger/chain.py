"""The hash chain: every entry carries the SHA-256 of its content and of the entry before it (walked and checked by
:mod:`pos.ledger.verify`); entry times."""

from __future__ import annotations

import hashlib
import json
import time

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
