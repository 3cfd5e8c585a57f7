"""The ``pos`` command line. A contract: scripts outside the project use these names, flags and JSON shapes.

Exit status: 0 success or approved; 1 declined, refused or a failed operation (a full or read-only disk included:
nothing half-written); 2 bad usage or bad input (nothing written). Errors are one line on stderr, with ``--json``
also ``{"error", "code"}`` on stdout (:mod:`pos.cli.errors`). Every command takes ``--home DIR`` (default
``POS_HOME``, else a per-user data directory) and ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ecny_nfc.mock import Faults
from pos.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    amount,
    as_ecny_error,
    bounded_int,
    nonneg_int,
    reader_spec,
    report,
    seconds,
)
from pos.home import Home, default_home
from pos.money import format_fen
from wallet import clock
from wallet.errors import EcnyError, InvalidInput, StorageError
from wallet.protocol import INS_PAY, INS_READ_INFO, INS_SELECT
from wallet.store import BadPath

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Commands", "build_parser", "emit", "main"]
Handler = Callable[[argparse.Namespace, Home], int]
ENV_NOW = "POS_NOW"  # a virtual clock for one command, as --now
MAX_APDUS = 64  # a tap is a handful of APDUs: fault positions beyond this could never fire
_amount = amount
_nonneg_int = nonneg_int




def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=None if args.compact else 2))
    else:
        print(text)


TEAR_COMMANDS = {"select": INS_SELECT, "read-info": INS_READ_INFO, "pay": INS_PAY}


def _tear_point(text: str) -> dict[str, int]:
    """The mock reader's tear fault: after the N-th APDU, or after a command named by TEAR_COMMANDS."""
    if text.lower() in TEAR_COMMANDS:
        return {"tear_at": TEAR_COMMANDS[text.lower()]}
    if not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither an APDU number nor one of {', '.join(TEAR_COMMANDS)}")
    return {"tear_after": bounded_int(0, MAX_APDUS)(text)}


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
    from pos.cli.ticket_cmds import check_online, fund_online

    if not 1 <= args.count <= 1000:
        raise InvalidInput("--count must be between 1 and 1000")
    check_online(args)  # --online: within the tier's cap, for wallets the operator registers
    cards = issue_cards(home, args.tier, args.balance, args.count, expired=args.expired, foreign=args.foreign)
    online = fund_online(home, [c.card_id for c in cards], args.online)
    data = {"cards": [{"card_id": c.card_id, "wallet_id": c.wallet_id, "tier": c.tier, "balance_fen": c.balance_fen,
                       **online.get(c.card_id, {})} for c in cards]}
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
    from pos.cards.online import online_view

    c = describe_card(home.cards.load(args.card))
    c.update(online_view(home, c["wallet_id"]))  # the online balance and red packets, as the operator has them
    emit(args, c, "\n".join(f"{k}: {v}" for k, v in c.items()))
    return EXIT_OK


def cmd_card_load(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.manage import LoadRefused, apply_load
    from pos.cli.ticket_cmds import load_online
    from pos.sync.client import OperatorRefused
    from wire.errors import OperatorError

    home.cards.load(args.card)  # an unknown or damaged card is bad input (exit 2), before the operator is asked
    if args.online:
        return load_online(args, home)
    try:
        balance, token = apply_load(home, args.card, amount_fen=args.amount)
    except LoadRefused as exc:
        data: dict[str, Any] = {"status": "refused", "reason": exc.reason.value, "message": exc.reason.message("en")}
        emit(args, data, f"REFUSED {exc.reason.value}: {exc.reason.message('en')}")
        return EXIT_FAILED
    except (OperatorRefused, OperatorError) as exc:  # the operator will not sign this load (over the cap, revoked)
        code = getattr(exc, "code", None) or "refused"
        emit(args, {"status": "refused", "reason": code, "message": str(exc)}, f"REFUSED {code}: {exc}")
        return EXIT_FAILED
    packets = token.amount_fen - args.amount  # red packets the token carried (docs/tickets.md)
    data = {"status": "loaded", "card_id": args.card, "amount_fen": args.amount, "balance_fen": balance,
            "load_counter": token.load_counter, "red_packet_fen": packets}
    emit(args, data, f"loaded {format_fen(args.amount)} onto {args.card}"
         + (f" + red packets {format_fen(packets)}" if packets else "") + f": balance {format_fen(balance)}")
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
    from pos.i18n import tr
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
    elif outcome.kept_voucher_id:  # paid, not written; this process exits: the card's log and next tap finish it
        data["message"] = tr("outcome.kept_cli", lang)
        text = (f"PENDING_RECOVERY {format_fen(outcome.amount_fen)}  voucher {outcome.kept_voucher_id}: "
                f"{data['message']}")
    else:
        assert outcome.reason is not None
        text = f"DECLINED {outcome.reason.value}: {outcome.message(lang)}"
        if outcome.reason.next_step(lang) and not outcome.pending_recovery:  # that message already says it
            text += f" ({outcome.reason.next_step(lang)})"
    if outcome.discount_fen:  # an instant discount: the card paid the net
        text += "\n" + outcome.discount_note(lang)
    if outcome.recovered:
        text += f"\nrecovered earlier torn payments: {', '.join(outcome.recovered)}"
    if args.trace and not args.json:
        text += "\n" + "\n".join(f"  > {t.command.hex(' ').upper()}\n  < "
                                 f"{t.response.hex(' ').upper() if t.response else '(none)'}   {t.meaning}"
                                 for t in outcome.trace)
    emit(args, data, text)
    return EXIT_OK if outcome.approved else EXIT_FAILED


# -- demo -----------------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace, home: Home) -> int:
    from pos.cli.demo import run_demo

    return run_demo(home, args)


# -- parser ---------------------------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    p.add_argument("--home", default=argparse.SUPPRESS, help="data directory (default: $POS_HOME or per-user)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="merchants.yaml to use (default: $POS_CONFIG, "
                                                               "HOME/merchants.yaml, else the shipped one)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p.add_argument("--now", default=argparse.SUPPRESS, metavar="TIME",
                   help="run on a virtual clock frozen at TIME (ISO 8601; without an offset, China time UTC+8; "
                        "default: $POS_NOW, else the real time)")
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
COMMAND_MODULES = ("pos.cli.ledger_cmds", "pos.cli.operator_cmds", "pos.cli.readers", "pos.cli.ui_cmds",
                   "pos.cli.fleet_cmds", "pos.cli.scenario_cmds", "pos.cli.merchant_cmds",
                   "pos.cli.reconcile_cmds", "pos.cli.ticket_cmds", "pos.cli.redpacket_cmds",
                   "pos.cli.campaign_cmds")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(prog="pos", parents=[common],
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
    p.add_argument("--online", type=_amount, metavar="YUAN", help="also give each wallet this online balance")
    add("list", cmd_card_list, "list mock cards", card)
    p = add("show", cmd_card_show, "show one card", card)
    p.add_argument("card")
    p = add("load", cmd_card_load, "load money onto a card with an operator-signed token", card)
    p.add_argument("card")
    p.add_argument("--amount", type=_amount, required=True, metavar="YUAN")
    p.add_argument("--online", action="store_true", help="load the wallet's online balance, not the card")
    p = add("clone", cmd_card_clone, "make an attack card with the same keys and state", card)
    p.add_argument("card")
    p.add_argument("--without-key", action="store_true",
                   help="copy only what the card shows (id, certificate, state), with a key of its own")

    p = add("pay", cmd_pay, "tap a mock card on a terminal (headless, full protocol)")
    p.add_argument("--terminal", required=True)
    p.add_argument("--card", help="mock card id (with --reader mock)")
    p.add_argument("--amount", type=_amount, required=True, metavar="YUAN")
    p.add_argument("--reader", type=reader_spec, default="mock",
                   help="mock (default), usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT, pcsc[:NAME]")
    p.add_argument("--tear-after", type=_tear_point, metavar="N|COMMAND",
                   help="pull the card after the N-th APDU, or after a command: " + ", ".join(TEAR_COMMANDS))
    p.add_argument("--retap", action="store_true", help="after a tear, tap the same card again")
    p.add_argument("--corrupt", type=bounded_int(1, MAX_APDUS), metavar="N", help="flip a byte in the N-th response")
    p.add_argument("--slow", type=seconds, default=0.0, metavar="S", help="add S seconds to every APDU")
    p.add_argument("--power-loss", action="store_true",
                   help="the terminal dies right after the card answers PAY, before it records the voucher")
    p.add_argument("--timeout", type=seconds, default=5.0, metavar="S")
    p.add_argument("--trace", action="store_true", help="show the APDU trace")
    p.add_argument("--lang", choices=["en", "zh-CN"])

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
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return report(want_json, exc)
    for name, default in (("home", None), ("config", None), ("json", False), ("now", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    args.compact = False
    try:
        home = _home(args)
        with clock.use(_clock_source(args)):
            status = int(args.handler(args, home))
        sys.stdout.flush()  # a closed pipe shows up here, inside the handling below
        return status
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt:
        return 130
    except EcnyError as exc:
        return report(args.json, exc, _hint(args, exc))
    except Exception as exc:  # only storage errors (OSError, SQLite's, SQLAlchemy's around them) are mapped
        typed = as_ecny_error(exc, Path(args.home or default_home()))
        if typed is None:
            raise
        return report(args.json, typed, _hint(args, typed))


def _home(args: argparse.Namespace) -> Home:
    root = Path(args.home).expanduser() if args.home else default_home()
    if root.exists() and not root.is_dir():
        raise BadPath(f"--home {root} is a file, not a directory")
    return Home(root, Path(args.config) if args.config else None)


def _clock_source(args: argparse.Namespace) -> clock.Clock:
    """A frozen virtual clock at ``--now`` (else ``POS_NOW``), else the process's clock."""
    text = args.now or os.environ.get(ENV_NOW) or None
    if text is None:
        return clock.current()
    try:
        return clock.VirtualClock(clock.parse_instant(text))
    except InvalidInput as exc:
        raise InvalidInput(f"{'--now' if args.now else ENV_NOW}: {exc}") from None


def _hint(args: argparse.Namespace, exc: EcnyError) -> str:
    """The error line, worded for the command: after a failed ``pos pay`` the customer taps the same wallet."""
    text = str(exc)
    if isinstance(exc, StorageError) and args.command == "pay":
        text = text.replace("run the same command again", "tap the same wallet again")
    return text


def _broken_pipe() -> int:
    """The reader of our output went away (``pos card list | head -1``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
