"""One terminal per reader: an advisory lock per device, held while a reader is open (released if the process dies)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from ecny_nfc.reader import ReaderBusy


def lock_dir() -> Path:
    """Where reader locks live: ``$ECNY_READER_LOCKS``, else ``$XDG_RUNTIME_DIR/ecny-pos``, else the temp dir."""
    base = os.environ.get("ECNY_READER_LOCKS") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), "ecny-pos-readers")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


class ReaderLock:
    """An exclusive lock on ``key``; raises :class:`ReaderBusy` at once if another process (or reader) holds it."""

    def __init__(self, key: str) -> None:
        name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock"
        self.path = lock_dir() / name
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise ReaderBusy(f"reader {key!r} is in use by another terminal") from None
        with contextlib.suppress(OSError):
            os.write(self._fd, f"{os.getpid()} {key}\n".encode())

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
