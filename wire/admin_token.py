"""The operator's back-office bearer token, kept in a file an embedded operator and its tester tools share."""

from __future__ import annotations

import secrets
from pathlib import Path

from filelock import FileLock

from wallet.files import write_atomic


def load_admin_token(path: Path) -> str:
    """The token in ``path`` (created on first use, 32 random bytes as hex, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with FileLock(str(path.parent / ".lock"), timeout=60):
            if not path.exists():
                write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
    return path.read_text().strip()
