"""How the ``pos`` command line fails: argument types that refuse bad values, one error line, a JSON error object
and an exit status chosen by the error's type.

Exit status 2 is bad usage or bad input (nothing was written); 1 is an operation that failed or was refused (also
nothing half-written: a full or read-only disk is :class:`~wallet.errors.StorageError`, exit 1, because the input was
fine and the same command succeeds once the disk is). Errors are mapped by the names along the exception's MRO, so a
new subclass anywhere (e.g. the ledger's ``LedgerMissing``) gets the code of its nearest known base.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

from pos.money import parse_yuan
from wallet.errors import EcnyError, InvalidInput, StorageError
from wallet.store import os_error

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a Unix tool killed by a closed pipe (`pos card list | head`) returns

# Exception class name -> (JSON "code", exit status); the first name found along the exception's MRO wins.
ERROR_KINDS: dict[str, tuple[str, int]] = {
    "UsageError": ("usage", EXIT_USAGE),
    "ConfigError": ("config", EXIT_USAGE),
    "CardNotFound": ("card_not_found", EXIT_USAGE),
    "NotProvisioned": ("not_provisioned", EXIT_USAGE),
    "LedgerMissing": ("ledger_missing", EXIT_USAGE),
    "NoLedger": ("ledger_missing", EXIT_USAGE),
    "CorruptedCard": ("card_corrupted", EXIT_USAGE),
    "CorruptedFile": ("file_corrupted", EXIT_USAGE),
    "BadPath": ("bad_path", EXIT_USAGE),
    "ReaderNotFound": ("reader_not_found", EXIT_USAGE),
    "InvalidInput": ("invalid_input", EXIT_USAGE),
    "StorageError": ("storage", EXIT_FAILED),
    "LedgerTampered": ("ledger_tampered", EXIT_FAILED),
    "LedgerError": ("ledger", EXIT_FAILED),
    "CardKeyError": ("card_corrupted", EXIT_USAGE),
    "CardStoreError": ("card_store", EXIT_FAILED),
    "OperatorUnavailable": ("operator_unavailable", EXIT_FAILED),
    "OperatorRefused": ("operator_refused", EXIT_FAILED),
    "WalletIdsExhausted": ("wallet_ids_exhausted", EXIT_FAILED),
    "ReaderError": ("reader", EXIT_FAILED),
    "TerminalNotRunning": ("terminal_not_running", EXIT_FAILED),  # pos card tap: nothing listens at HOME/run/TID.sock
    "TapRefused": ("tap_refused", EXIT_FAILED),  # the running terminal did not take the tap
    "EcnyError": ("failed", EXIT_FAILED),
}


class UsageError(InvalidInput):
    """The command line itself is wrong (argparse's own errors): exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing its usage text and exiting, so ``main`` prints
    the one error line (and the JSON object with ``--json``) like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def classify(exc: BaseException) -> tuple[str, int]:
    """The JSON code and exit status of an error."""
    for cls in type(exc).__mro__:
        if cls.__name__ in ERROR_KINDS:
            return ERROR_KINDS[cls.__name__]
    return ERROR_KINDS["EcnyError"]


def as_ecny_error(exc: BaseException, home: Path) -> EcnyError | None:
    """A raw storage error escaping a command (``OSError``, SQLite's "database or disk is full", "readonly
    database", also wrapped by SQLAlchemy as ``exc.orig``) as a typed error naming the path and what to do; None for
    anything else."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, (OSError, sqlite3.Error)):
        exc = orig
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_error(exc, exc.filename or home)
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        code = (errno.ENOSPC if "full" in text or ("i/o" in text and _nearly_full(home)) else
                errno.EROFS if "readonly" in text else errno.EACCES if "unable to open" in text else None)
        if code is not None:
            return os_error(OSError(code, str(exc)), home)
        return StorageError(f"storage under {home} failed ({exc}): check that the disk is not full or failing, then "
                            "run the same command again", str(home))
    return None


def _nearly_full(path: Path) -> bool:
    """SQLite says "disk I/O error" when it cannot grow its shared-memory file on a full disk: tell that apart."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free < 1 << 20
            except OSError:
                return False
    return False


def report(want_json: bool, exc: BaseException, message: str | None = None) -> int:
    """Print one error line on stderr (and ``{"error", "code"}`` on stdout with ``--json``); the exit status."""
    code, status = classify(exc)
    text = (message or str(exc) or type(exc).__name__).replace("\n", " ")
    if want_json:
        print(json.dumps({"error": text, "code": code}, ensure_ascii=False))
    print(f"pos: error: {text}", file=sys.stderr)
    return status


# -- argument types -------------------------------------------------------------------------------------------------
def amount(text: str) -> int:
    """A yuan amount (``12.30``) as fen."""
    try:
        return parse_yuan(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def bounded_int(low: int, high: int) -> Any:
    """A whole number in ``low..high``."""
    def parse(text: str) -> int:
        n = nonneg_int(text)
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}")
        return n
    return parse


def seconds(text: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0 to 86400")
    return value


READER_KINDS = ("mock", "usb", "tty", "udp", "pcsc")


def reader_spec(text: str) -> str:
    """A reader: mock, usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT or pcsc[:NAME] (checked by kind here; the
    reader itself says whether it is there)."""
    kind = text.split(":", 1)[0]
    if kind not in READER_KINDS or (kind == "mock" and text != "mock"):
        raise argparse.ArgumentTypeError(
            f"unknown reader {text!r}: use mock, usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT or pcsc[:NAME]")
    return text
