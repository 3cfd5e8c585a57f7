"""The ``pos`` command line. A contract: scripts outside the project use these names, flags and JSON shapes.

Exit status: 0 success or approved; 1 declined or a failed check; 2 bad usage or bad input (nothing written).
Every command takes ``--home DIR`` (default ``POS_HOME``, else a per-user data directory) and ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ecny_nfc.mock import Faults
from pos.home import Home, default_home
from pos.money import format_fen, parse_yuan
from wallet.errors import EcnyError, InvalidInput
from wallet.protocol import INS_PAY, INS_READ_INFO, INS_SELECT

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Handler = Callable[[argparse.Namespace, Home], int]


class Failed(EcnyError):
    """A check failed (exit status 1); the message says what."""


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=None if args.compact else 2))
    else:
        print(text)


def _amount(text: str) -> int:
    try:
        return parse_yuan(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TEAR_COMMANDS = {"select": INS_SELECT, "read-info": INS_READ_INFO, "pay": INS_PAY}


def _tear_point(text: str) -> dict[str, int]:
    """The mock reader's tear fault: after the N-th APDU, or after a command named by TEAR_COMMANDS."""
    if text.lower() in TEAR_COMMANDS:
        return {"tear_at": TEAR_COMMANDS[text.lower()]}
    if not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither an APDU number nor one of {', '.join(TEAR_COMMANDS)}")
    return {"tear_after": _nonneg_int(text)}


def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


# -- merchants ------------------------------------------------------------------------------------------------------
def cmd_merchants(args: argparse.Namespace, home: Home) -> int:
    cfg = home.config
    lang = cfg.language
    data = {"merchants": [{"id": m.id, "name": m.name.get(lang), "name_zh": m.name.zh, "name_en": m.name.en,
                           "category": m.category,
                           "terminals": [{"id": t.id, "kind": t.kind} for t in m.terminals]} for m in cfg.merchants]}
    lines = []
    for m in cfg.merchants:
        lines.append(f"{m.id}  {m.name.zh} / {m.name.en}  [{m.category}]")
        for t in m.terminals:
            lines.append(f"    {t.id}  {t.kind}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK


# -- cards ----------------------------------------------------------------------------------------------------------
def cmd_card_issue(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.manage import issue_cards

    if not 1 <= args.count <= 1000:
        raise InvalidInput("--count must be between 1 and 1000")
    cards = issue_cards(home, args.tier, args.balance, args.count, expired=args.expired, foreign=args.foreign)
    data = {"cards": [{"card_id": c.card_id, "wallet_id": c.wallet_id, "tier": c.tier, "balance_fen": c.balance_fen}
                      for c in cards]}
    emit(args, data, "\n".join(f"{c.card_id}  wallet {c.wallet_id}  tier {c.tier}  {format_fen(c.balance_fen)}"
                               for c in cards))
    return EXIT_OK


def cmd_card_list(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.manage import describe_card

    cards = [describe_card(home.cards.load(i)) for i in home.cards.ids()]
    emit(args, {"cards": cards}, "\n".join(
        f"{c['card_id']}  {c['wallet_id']}  tier {c['tier']}  {format_fen(c['balance_fen']):>12}  "
        f"counter {c['counter']}  {c['status']}{'  clone of ' + c['clone_of'] if c['clone_of'] else ''}"
        for c in cards) or "no cards: issue some with `pos card issue --tier 4 --balance 1000`")
    return EXIT_OK


def cmd_card_show(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.manage import describe_card

    c = describe_card(home.cards.load(args.card))
    emit(args, c, "\n".join(f"{k}: {v}" for k, v in c.items()))
    return EXIT_OK


def cmd_card_load(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.manage import LoadRefused, apply_load

    try:
        balance, token = apply_load(home, args.card, amount_fen=args.amount)
    except LoadRefused as exc:
        data: dict[str, Any] = {"status": "refused", "reason": exc.reason.value, "message": exc.reason.message("en")}
        emit(args, data, f"REFUSED {exc.reason.value}: {exc.reason.message('en')}")
        return EXIT_FAILED
    data = {"status": "loaded", "card_id": args.card, "amount_fen": args.amount, "balance_fen": balance,
            "load_counter": token.load_counter}
    emit(args, data, f"loaded {format_fen(args.amount)} onto {args.card}: balance {format_fen(balance)}")
    return EXIT_OK


def cmd_card_clone(args: argparse.Namespace, home: Home) -> int:
    clone = home.cards.clone(args.card, with_key=not args.without_key)
    emit(args, {"card_id": clone.card_id, "clone_of": args.card, "wallet_id": clone.wallet_id,
                "with_key": not args.without_key},
         f"{clone.card_id}: a clone of {args.card} (wallet {clone.wallet_id})"
         f"{', without its key' if args.without_key else ''}")
    return EXIT_OK


# -- pay ------------------------------------------------------------------------------------------------------------
def cmd_pay(args: argparse.Namespace, home: Home) -> int:
    from ecny_nfc.factory import open_reader
    from pos.cards.manage import tap_mock_card
    from pos.payment.checkout import take_payment

    lang = args.lang or "en"
    if args.reader == "mock":
        if not args.card:
            raise InvalidInput("--card is required with the mock reader")
        faults = Faults(**(args.tear_after or {}), corrupt_response=args.corrupt, delay=args.slow)
        outcome = tap_mock_card(home, args.terminal, args.card, args.amount, faults, retap=args.retap,
                                timeout=args.timeout, power_loss=args.power_loss)
    else:
        if args.card or args.tear_after is not None or args.corrupt is not None or args.slow or args.power_loss:
            raise InvalidInput("--card and fault options work with the mock reader only")
        home.terminal(args.terminal)
        reader = open_reader(args.reader)
        try:
            outcome = take_payment(home, args.terminal, reader, args.amount, timeout=args.timeout)
        finally:
            reader.close()
    data = outcome.to_json(lang, trace=args.trace)
    if outcome.approved:
        text = (f"APPROVED {format_fen(outcome.amount_fen)}  voucher {outcome.voucher_id}  "
                f"balance {format_fen(outcome.balance_after_fen or 0)}")
    else:
        assert outcome.reason is not None
        text = f"DECLINED {outcome.reason.value}: {outcome.message(lang)}"
        if outcome.reason.next_step(lang):
            text += f" ({outcome.reason.next_step(lang)})"
    if outcome.recovered:
        text += f"\nrecovered earlier torn payments: {', '.join(outcome.recovered)}"
    if args.trace and not args.json:
        text += "\n" + "\n".join(f"  > {t.command.hex(' ').upper()}\n  < "
                                 f"{t.response.hex(' ').upper() if t.response else '(none)'}   {t.meaning}"
                                 for t in outcome.trace)
    emit(args, data, text)
    return EXIT_OK if outcome.approved else EXIT_FAILED


# -- ledger ---------------------------------------------------------------------------------------------------------
def cmd_ledger_list(args: argparse.Namespace, home: Home) -> int:
    with home.ledger(args.terminal, readonly=True) as ledger:
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

    with home.ledger(args.terminal, readonly=True) as ledger:
        try:
            report = ledger.verify(full=True)
        except LedgerTampered as exc:
            emit(args, {"ok": False, "problems": str(exc).split("; ")}, f"TAMPERED: {exc}")
            return EXIT_FAILED
    emit(args, {"ok": True, "entries": report.entries, "head_seq": report.head_seq, "head_hash": report.head_hash},
         f"ok: {report.entries} entries, hash chain intact, head {report.head_hash[:16]}…")
    return EXIT_OK


def cmd_ledger_export(args: argparse.Namespace, home: Home) -> int:
    from pos.money import fen_to_yuan_text

    fields = ["seq", "time", "kind", "voucher_id", "wallet_id", "counter", "amount_fen", "amount_yuan", "hash"]
    out = Path(args.csv)
    with home.ledger(args.terminal, readonly=True) as ledger:
        rows = list(ledger.entries())
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for e in rows:
            w.writerow([e.seq, e.time, e.kind, e.voucher_id or "", e.wallet_id or "", e.counter or "",
                        e.amount_fen, fen_to_yuan_text(e.amount_fen), e.hash])
    tmp.replace(out)
    emit(args, {"file": str(out), "entries": len(rows)}, f"wrote {len(rows)} entries to {out}")
    return EXIT_OK


# -- demo -----------------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, home: Home) -> int:
    from pos.cli.demo import run_demo

    return run_demo(home, args)


# -- parser ---------------------------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--home", default=argparse.SUPPRESS, help="data directory (default: $POS_HOME or per-user)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="merchants.yaml to use (default: $POS_CONFIG, "
                                                               "HOME/merchants.yaml, else the shipped one)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return p


class Commands:
    """Adds subcommands that share the common options; command modules get one in ``register(commands)``."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self.sub = sub
        self.common = common
        self._groups: dict[str, Any] = {}

    def add(self, name: str, handler: Handler, help_text: str, group: str | None = None) -> argparse.ArgumentParser:
        parent = self.sub if group is None else self.group(group)
        p = parent.add_parser(name, parents=[self.common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def group(self, name: str, help_text: str = "") -> Any:
        """A command group such as ``card`` (created on first use)."""
        if name not in self._groups:
            self._groups[name] = self.sub.add_parser(name, help=help_text).add_subparsers(
                dest=f"{name}_command", required=True, metavar="ACTION")
        return self._groups[name]


# Modules that add their own commands through ``register(commands: Commands)``.
COMMAND_MODULES = ("pos.cli.operator_cmds", "pos.cli.readers", "pos.cli.ui_cmds")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="pos", parents=[common],
                                     description="ecny-pos: an e-CNY tap-to-pay terminal simulator")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = Commands(sub, common)

    def add(name: str, handler: Handler, help_text: str, parent: str | None = None) -> argparse.ArgumentParser:
        return commands.add(name, handler, help_text, parent)

    add("merchants", cmd_merchants, "list merchants and their terminals")

    card = "card"
    commands.group(card, "mock wallet cards (tester)")
    p = add("issue", cmd_card_issue, "issue mock cards", card)
    p.add_argument("--tier", type=int, required=True, choices=[1, 2, 3, 4])
    p.add_argument("--balance", type=_amount, required=True, metavar="YUAN")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--expired", action="store_true", help="give the card a certificate that has expired")
    p.add_argument("--foreign", action="store_true", help="certify the card by an issuer terminals do not trust")
    add("list", cmd_card_list, "list mock cards", card)
    p = add("show", cmd_card_show, "show one card", card)
    p.add_argument("card")
    p = add("load", cmd_card_load, "load money onto a card with an operator-signed token", card)
    p.add_argument("card")
    p.add_argument("--amount", type=_amount, required=True, metavar="YUAN")
    p = add("clone", cmd_card_clone, "make an attack card with the same keys and state", card)
    p.add_argument("card")
    p.add_argument("--without-key", action="store_true",
                   help="copy only what the card shows (id, certificate, state), with a key of its own")

    p = add("pay", cmd_pay, "tap a mock card on a terminal (headless, full protocol)")
    p.add_argument("--terminal", required=True)
    p.add_argument("--card", help="mock card id (with --reader mock)")
    p.add_argument("--amount", type=_amount, required=True, metavar="YUAN")
    p.add_argument("--reader", default="mock", help="mock (default), usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT, "
                                                   "pcsc[:NAME]")
    p.add_argument("--tear-after", type=_tear_point, metavar="N|COMMAND",
                   help="pull the card after the N-th APDU, or after a command: " + ", ".join(TEAR_COMMANDS))
    p.add_argument("--retap", action="store_true", help="after a tear, tap the same card again")
    p.add_argument("--corrupt", type=_nonneg_int, metavar="N", help="flip a byte in the N-th response")
    p.add_argument("--slow", type=float, default=0.0, metavar="S", help="add S seconds to every APDU")
    p.add_argument("--power-loss", action="store_true",
                   help="the terminal dies right after the card answers PAY, before it records the voucher")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--trace", action="store_true", help="show the APDU trace")
    p.add_argument("--lang", choices=["en", "zh-CN"])

    led = "ledger"
    commands.group(led, "a terminal's ledger")
    p = add("list", cmd_ledger_list, "list ledger entries", led)
    p.add_argument("--terminal", required=True)
    p.add_argument("--kind")
    p = add("verify", cmd_ledger_verify, "check the hash chain and head", led)
    p.add_argument("--terminal", required=True)
    p = add("export", cmd_ledger_export, "export entries to CSV", led)
    p.add_argument("--terminal", required=True)
    p.add_argument("--csv", required=True, metavar="FILE")

    p = add("demo", cmd_demo, "headless demo: issue demo cards, take payments, show the ledger")
    p.add_argument("--terminal")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("home", None), ("config", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    args.compact = False
    home = Home(Path(args.home) if args.home else default_home(), Path(args.config) if args.config else None)
    try:
        return int(args.handler(args, home))
    except InvalidInput as exc:
        _error(args, str(exc))
        return EXIT_USAGE
    except EcnyError as exc:
        _error(args, str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _error(args: argparse.Namespace, message: str) -> None:
    if args.json:
        print(json.dumps({"error": message}, ensure_ascii=False))
    print(f"pos: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
