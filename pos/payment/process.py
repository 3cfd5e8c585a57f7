"""This process as the ledger sees it: an owner id that survives pid reuse, and GC pauses kept out of taps."""

from __future__ import annotations

import gc
import os
import threading


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (guards against a recycled pid); empty where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


OWNER = f"{os.getpid()}:{_process_start(os.getpid())}"
_ACTIVE: set[tuple[str, int]] = set()  # (ledger path, intent seq) of charges running in this process
_ACTIVE_LOCK = threading.Lock()


class _GcDeferred:
    """Keeps the cyclic garbage collector waiting while taps are being decided, so its pauses fall between
    customers instead of inside a tap. Process-wide and nestable: collection resumes when the last tap in
    progress (in any thread) is decided, and only if it was enabled before the first."""

    _lock = threading.Lock()
    _depth = 0
    _was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if _GcDeferred._depth == 0:
                _GcDeferred._was_enabled = gc.isenabled()
                gc.disable()
            _GcDeferred._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            _GcDeferred._depth -= 1
            if _GcDeferred._depth == 0 and _GcDeferred._was_enabled:
                gc.enable()


def _owner_alive(owner: str) -> bool:
    pid_text, _, start = owner.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if owner == OWNER:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_start(pid) == start
