"""The sealed head: the last entry's seq and hash carry an HMAC under a key kept in a file beside the database
(``ledger.key``, mode 0600), so a cut-off tail or a rewritten head is found even when the chain itself is intact."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from filelock import FileLock

from pos.ledger.model import LedgerError

KEY_BYTES = 32


def load_key(db_path: Path) -> bytes:
    """The head key beside ``db_path`` (``.key``), created once (atomically, under a file lock) if absent."""
    key_path = db_path.with_suffix(".key")
    if not key_path.exists():
        with FileLock(str(key_path) + ".lock", timeout=30):
            if not key_path.exists():
                from wallet.certs import write_atomic

                write_atomic(key_path, secrets.token_bytes(KEY_BYTES), mode=0o600)
    key = key_path.read_bytes()
    if len(key) != KEY_BYTES:
        raise LedgerError(f"ledger key {key_path} is damaged")
    return key


def head_mac(key: bytes, seq: int, h: str) -> str:
    """The authentication code of a head at entry ``seq`` with hash ``h``."""
    return hmac.digest(key, f"{seq}:{h}".encode(), "sha256").hex()
