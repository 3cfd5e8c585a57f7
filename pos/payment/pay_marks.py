"""Pay-sent marks: what lets the next tap close an abandoned charge ``void`` when no PAY of it was ever sent.

Right before a charge sends PAY it leaves a mark beside the ledger (``ledger.db.pay-sent/SEQ``: the intent's
challenge, the wallet and the counter the PAY will produce). A charge whose process died (an orphan) is then decided
by the mark:

- **no mark, and its process ran in this boot of the machine** (the owner id carries the kernel's boot id): no PAY
  was sent, so no card can hold a voucher for it: ``void``. The mark is a file created with one ``write`` before
  the PAY, without fsync: the kernel makes it visible to every later process as soon as the call returns, even if
  the writer is killed the next instant. Only a crash of the operating system can lose it, and after one the boot
  id differs, so the rule does not apply;
- **a mark**: PAY may have reached that wallet; it is settled like a torn tap when that wallet is next in the field;
- **no mark from another boot** (or an owner id without a boot): undecided; every tap asks for it (in the one
  RECOVER a tap sends anyway) and after seven days it is closed ``unresolved``.

A mark costs a file creation (tens of microseconds), no fsync inside the customer's tap. Marks of closed intents are
swept away every few charges (a stale mark proves nothing more than its intent's closing entry says).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PayMark:
    seq: int
    challenge: bytes
    wallet_id: str
    counter: int


def marks_dir(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".pay-sent")


def write_mark(ledger_path: Path, mark: PayMark) -> None:
    """Leave the mark before PAY is sent. Raises OSError (then no PAY may be sent)."""
    folder = marks_dir(ledger_path)
    body = json.dumps({"challenge": mark.challenge.hex(), "wallet_id": mark.wallet_id,
                       "counter": mark.counter}).encode()
    for attempt in (0, 1):
        try:
            fd = os.open(folder / str(mark.seq), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            break
        except FileNotFoundError:
            if attempt:
                raise
            folder.mkdir(mode=0o700, exist_ok=True)
    try:
        if os.write(fd, body) != len(body):
            raise OSError("pay-sent mark written short")
    finally:
        os.close(fd)


def read_marks(ledger_path: Path) -> dict[int, PayMark]:
    """The marks left beside the ledger, by intent seq. One that does not read (a process killed between creating
    and writing it) has an empty wallet id: it proves nothing either way."""
    out: dict[int, PayMark] = {}
    try:
        entries = list(os.scandir(marks_dir(ledger_path)))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.name.isdigit():
            continue
        seq = int(entry.name)
        try:
            with open(entry.path, "rb") as fh:
                data = json.loads(fh.read())
            out[seq] = PayMark(seq, bytes.fromhex(data["challenge"]), str(data["wallet_id"]), int(data["counter"]))
        except (OSError, ValueError, KeyError, TypeError):
            out[seq] = PayMark(seq, b"", "", 0)
    return out


def sweep_marks(ledger_path: Path, open_seqs: set[int]) -> None:
    """Remove the marks of intents no longer open (best effort: a stale mark only waits for the next sweep)."""
    try:
        entries = list(os.scandir(marks_dir(ledger_path)))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.isdigit() and int(entry.name) not in open_seqs:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
