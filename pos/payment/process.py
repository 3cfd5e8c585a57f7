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


def _boot_id() -> str:
    """This boot of the machine (the kernel's random boot id); empty where /proc is missing."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()
# pid:start-time@boot-id: the boot tells a pid of an earlier boot apart, and lets the recovery trust what a process
# of this boot wrote to the page cache (pos.payment.recovery: the pay-sent marks)
OWNER = f"{os.getpid()}:{_process_start(os.getpid())}@{BOOT_ID}"


def owner_boot(owner: str) -> str:
    """The boot id an owner id carries ("" for an owner id from before boot ids were recorded)."""
    return owner.partition("@")[2]
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
    if owner == OWNER:
        return True
    ident, _, boot = owner.partition("@")
    if boot and boot != BOOT_ID:  # a process of an earlier boot
        return False
    pid_text, _, start = ident.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_start(pid) == start
