"""The seals: the head (the last entry's seq and hash) and the verified checkpoint carry an HMAC under a key kept in a
file beside the database (``ledger.key``, mode 0600), so a cut-off tail, a rewritten head or a chain recomputed
without the key is found even when the chain itself is intact.

The key is created only with a new, empty ledger (:func:`create_key`); opening a ledger that has entries never
creates one (:func:`read_key`): a missing or damaged key is reported, not replaced.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from filelock import FileLock

from pos.ledger.model import LedgerKeyMissing

KEY_BYTES = 32


def key_path(db_path: Path) -> Path:
    """Where the key of the ledger at ``db_path`` lives (``ledger.db`` -> ``ledger.key``)."""
    return db_path.with_suffix(".key")


def read_key(db_path: Path) -> tuple[bytes | None, str | None]:
    """The key beside ``db_path`` and None, or None and what is wrong with it (missing, damaged). Creates nothing."""
    path = key_path(db_path)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None, f"the ledger key {path} is missing: the head cannot be authenticated"
    except OSError as exc:
        return None, f"the ledger key {path} cannot be read ({exc.strerror})"
    if len(key) != KEY_BYTES:
        return None, f"the ledger key {path} is damaged ({len(key)} bytes, not {KEY_BYTES})"
    return key, None


def create_key(db_path: Path) -> None:
    """Create the key of a new ledger (atomically, under a file lock) unless another process just did."""
    path = key_path(db_path)
    with FileLock(str(path) + ".lock", timeout=30):
        if not path.exists():
            from wallet.files import write_atomic

            write_atomic(path, secrets.token_bytes(KEY_BYTES), mode=0o600)


def load_key(db_path: Path) -> bytes:
    """The key beside ``db_path``, created if absent: for tools and tests that build a new ledger's key up front.
    A ledger opens its key itself (:class:`pos.ledger.Ledger`) and never creates one for a ledger with entries."""
    key, _ = read_key(db_path)
    if key is None:
        create_key(db_path)
        key, problem = read_key(db_path)
        if key is None:
            raise LedgerKeyMissing([str(problem)])
    return key


def head_mac(key: bytes, seq: int, h: str) -> str:
    """The authentication code of a head at entry ``seq`` with hash ``h``."""
    return hmac.digest(key, f"{seq}:{h}".encode(), "sha256").hex()


def checkpoint_mac(key: bytes, seq: int, h: str, open_intents: str, fingerprint: str) -> str:
    """The authentication code of a verified checkpoint (domain-separated from the head's)."""
    return hmac.digest(key, f"verified|{seq}|{h}|{open_intents}|{fingerprint}".encode(), "sha256").hex()
