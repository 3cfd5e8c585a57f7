"""``pos ledger list|verify|export``: read a terminal's ledger without writing to it.

A terminal that has no ledger in the home is bad input (exit 2) and nothing is created for it; the ledger is opened
read-only (:meth:`pos.home.Home.ledger` with ``readonly=True``), so these commands work on a read-only copy of a home.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet.errors import InvalidInput
from wallet.store import BadPath, os_error


class NoLedger(InvalidInput):
    """The terminal has never written a ledger in this home (nothing to list, verify or export)."""


def read_ledger(home: Home, terminal_id: str) -> Any:
    """Open a terminal's existing ledger read-only: a terminal that has no ledger yet is bad input, and opening it
    creates nothing."""
    home.terminal(terminal_id)
    path = home.terminal_dir(terminal_id) / "ledger.db"
    if not path.is_file():
        raise NoLedger(f"terminal {terminal_id} has no ledger in {home.root} yet: take a payment there first")
    return home.ledger(terminal_id, readonly=True)


def cmd_ledger_list(args: argparse.Namespace, home: Home) -> int:
    with read_ledger(home, args.terminal) as ledger:
        entries = [e.to_json() for e in ledger.entries(kind=args.kind)]
    for e in entries:
        e.pop("voucher", None)
        e.pop("body", None)
    emit(args, {"terminal_id": args.terminal, "entries": entries}, "\n".join(
        f"{e['seq']:>6}  {e['time']}  {e['kind']:<10} {format_fen(e['amount_fen']):>12}  {e['voucher_id'] or ''}"
        for e in entries) or "ledger is empty")
    return EXIT_OK


def cmd_ledger_verify(args: argparse.Namespace, home: Home) -> int:
    from pos.ledger import LedgerTampered

    try:
        with read_ledger(home, args.terminal) as ledger:
            checked = ledger.verify(full=True)
    except LedgerTampered as exc:
        problems = list(getattr(exc, "problems", None) or str(exc).split("; "))
        emit(args, {"ok": False, "problems": problems}, f"TAMPERED: {exc}")
        return EXIT_FAILED
    emit(args, {"ok": True, "entries": checked.entries, "head_seq": checked.head_seq, "head_hash": checked.head_hash},
         f"ok: {checked.entries} entries, hash chain intact, head {checked.head_hash[:16]}…")
    return EXIT_OK


def cmd_ledger_export(args: argparse.Namespace, home: Home) -> int:
    from pos.money import fen_to_yuan_text

    fields = ["seq", "time", "kind", "voucher_id", "wallet_id", "counter", "amount_fen", "amount_yuan", "hash"]
    out = Path(args.csv)
    if out.is_dir() or not out.name:
        raise BadPath(f"--csv {out} is a directory: give a file name, e.g. {out / 'ledger.csv'}")
    if not out.parent.is_dir():
        raise BadPath(f"--csv {out}: folder {out.parent} does not exist")
    with read_ledger(home, args.terminal) as ledger:
        rows = list(ledger.entries())
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(fields)
            for e in rows:
                w.writerow([e.seq, e.time, e.kind, e.voucher_id or "", e.wallet_id or "", e.counter or "",
                            e.amount_fen, fen_to_yuan_text(e.amount_fen), e.hash])
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # whole or not at all
        raise os_error(exc, out) from exc
    emit(args, {"file": str(out), "entries": len(rows)}, f"wrote {len(rows)} entries to {out}")
    return EXIT_OK


def register(commands: Commands) -> None:
    """Add ``ledger list``, ``ledger verify`` and ``ledger export``."""
    led = "ledger"
    commands.group(led, "a terminal's ledger")
    p = commands.add("list", cmd_ledger_list, "list ledger entries", led)
    p.add_argument("--terminal", required=True)
    p.add_argument("--kind")
    p = commands.add("verify", cmd_ledger_verify, "check the hash chain and head", led)
    p.add_argument("--terminal", required=True)
    p = commands.add("export", cmd_ledger_export, "export entries to CSV", led)
    p.add_argument("--terminal", required=True)
    p.add_argument("--csv", required=True, metavar="FILE")
