"""CLI commands of the terminal UIs: ``pos run`` (clerk), ``pos gate``, ``pos card tap``.

Textual is imported inside the handlers only, so ``pos pay`` and friends never load it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from pos.cli.errors import reader_spec
from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.gate.decision import places_left
from pos.home import Home
from pos.i18n import default_language
from pos.money import format_fen
from wallet.errors import EcnyError, InvalidInput

DEMO_CARDS = (  # tier, balance in fen, how many: what `pos run` issues into an empty card store
    (4, 100_000, 3),
    (2, 2_000_000, 1),
    (4, 500, 1),
)


def ensure_demo_cards(home: Home) -> list[str]:
    """Issue the demo cards when the store has none; return the ids issued."""
    from pos.cards.manage import issue_cards

    if home.cards.ids():
        return []
    issued = []
    for tier, balance, count in DEMO_CARDS:
        issued += [c.card_id for c in issue_cards(home, tier, balance, count, note="demo")]
    return issued


Note = tuple[str, dict[str, str]]  # a text key of pos.i18n and its fields: said in the UI's language


def start_embedded_operator(home: Home) -> tuple[Any, str | None, Note]:
    """Start the home's operator in-process (:mod:`pos.composition`): (handle, its URL, a note)."""
    from pos.composition import start_embedded_operator as start

    try:
        op = start(home)
    except EcnyError as exc:
        return None, None, ("note.operator_failed", {"error": str(exc)})
    return op, op.url, ("note.operator_running", {"url": op.url})


def ensure_provisioned(home: Home, terminal_id: str, operator_url: str | None) -> Note | None:
    """Give the terminal its operator key on first run (embedded defaults); a note when that fails."""
    from pos.sync.client import provision_terminal, terminal_key_path

    if terminal_key_path(home, terminal_id).exists():
        return None
    try:
        provision_terminal(home, terminal_id, operator_url)
    except EcnyError as exc:
        return ("note.not_provisioned", {"error": str(exc)})
    return None


def _stop(handle: Any) -> None:
    for name in ("stop", "close", "shutdown"):
        fn = getattr(handle, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return


def _open_reader(spec: str) -> Any:
    from ecny_nfc.factory import open_reader

    return open_reader(spec)


def start_services(args: argparse.Namespace, home: Home, tid: str) -> tuple[Any, Any, Note]:
    """The embedded operator (unless ``--no-operator``), the terminal provisioned on first run, and the services the
    UI syncs through: (operator handle or None, services, a note for the screen)."""
    from pos.sync.services import OperatorServices

    note: Note
    if args.no_operator:
        operator, url, note = None, None, ("note.no_operator", {})
    else:
        operator, url, note = start_embedded_operator(home)
        if operator is not None:
            note = ensure_provisioned(home, tid, url) or note
    return operator, OperatorServices(home, tid, operator_url=url), note


def cmd_run(args: argparse.Namespace, home: Home) -> int:
    """The clerk UI on a counter terminal."""
    from pos.runtime import Runtime
    from pos.ui.clerk import ClerkApp

    tid = args.terminal or home.config.first_terminal("counter")
    _, terminal = home.terminal(tid)
    if terminal.kind != "counter":
        raise InvalidInput(f"terminal {tid} is a {terminal.kind}: start it with `pos gate --terminal {tid}`")
    issued = ensure_demo_cards(home) if args.reader == "mock" else []
    operator, services, note = start_services(args, home, tid)
    runtime = Runtime(home, tid, _open_reader(args.reader))
    lang = default_language(args.lang or home.config.language)
    app = ClerkApp(runtime, lang=lang, services=services, printer=args.printer or home.config.printer)
    try:
        _serve(app, runtime, issued, note)
    finally:
        if operator is not None:
            _stop(operator)
    return EXIT_OK


def cmd_gate(args: argparse.Namespace, home: Home) -> int:
    """The gate UI on a gate terminal: like ``pos run``, the embedded operator and first-run provisioning, so the
    gate syncs its sales in the background and on F5."""
    from pos.gate.ticket_gate import Gate
    from pos.runtime import Runtime
    from pos.ui.gate import GateApp

    tid = args.terminal or home.config.first_terminal("gate")
    gate = Gate(home, tid)
    operator = None
    try:
        issued = ensure_demo_cards(home) if args.reader == "mock" else []
        operator, services, note = start_services(args, home, tid)
        gate.online.operator_url = services.operator_url  # online tickets are looked up there
        runtime = Runtime(home, tid, _open_reader(args.reader))
        app = GateApp(runtime, gate, lang=default_language(args.lang or home.config.language), services=services)
        _serve(app, runtime, issued, note)
    finally:
        gate.close()
        if operator is not None:
            _stop(operator)
    return EXIT_OK


def _serve(app: Any, runtime: Any, issued: list[str], note: Note) -> None:
    """Run a terminal UI until it quits: its tap socket open, the demo cards and the operator note shown first."""
    try:
        runtime.listen()
        if issued:
            app.call_later(lambda: app.notify(app.t("note.demo_cards", cards=", ".join(issued))))
        app.call_later(lambda: app.notify(app.t(note[0], **note[1])))
        app.run()
    finally:
        runtime.close()


def cmd_card_tap(args: argparse.Namespace, home: Home) -> int:
    """Tap a stored mock card on a running terminal and print its decision."""
    from pos.cards.tap_socket import send_tap

    result = send_tap(home, args.terminal, args.card, timeout=args.timeout)
    if result.get("status") == "approved":
        text = (f"APPROVED {format_fen(int(result.get('amount_fen') or 0))}  voucher {result.get('voucher_id')}  "
                f"balance {format_fen(int(result.get('balance_after_fen') or 0))}")
        if result.get("recovery"):
            text += f"  ({result['recovery']})"
    elif result.get("kept_voucher_id"):  # paid; the running terminal keeps it until its disk allows the write
        text = f"PENDING_RECOVERY voucher {result['kept_voucher_id']}: {result.get('message')}"
    else:
        text = f"DECLINED {result.get('reason')}: {result.get('message')}"
    if "gate" in result:
        g = result["gate"]
        said = f"{result.get('message')}: {g['next_step']}" if g.get("next_step") and not g["open"] else \
            result.get("message")
        text = (f"{'OPEN' if g['open'] else 'STOP'} {said}  "
                f"(entries today {g['entries_today']}, {places_left(int(g['remaining']), 'en')})")
    emit(args, result, text)
    return EXIT_OK if result.get("status") == "approved" else EXIT_FAILED


def printer_spec(text: str) -> str:
    """``--printer``: checked at once (a bad one is a usage error, exit 2)."""
    from pos.printer import parse_target

    try:
        parse_target(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(commands: Commands) -> None:
    """Add ``run``, ``gate`` and ``card tap``."""
    readers = "mock (default), usb[:VID:PID], tty:PORT:DRIVER, udp:HOST:PORT, pcsc[:NAME]"
    p = commands.add("run", cmd_run, "the clerk's counter UI (Textual)")
    p.add_argument("--terminal", help="counter terminal id (default: the first counter in merchants.yaml)")
    p.add_argument("--reader", type=reader_spec, default="mock", help=readers)
    p.add_argument("--lang", choices=["zh-CN", "en"], help="starting language (F3 switches)")
    p.add_argument("--no-operator", action="store_true", help="do not start the embedded operator")
    p.add_argument("--printer", type=printer_spec, metavar="SPEC",
                   help="receipt printer: tty:/dev/ttyUSB0[:BAUD] or file:PATH (default: merchants.yaml printer:)")
    p = commands.add("gate", cmd_gate, "the ticket gate UI (Textual)")
    p.add_argument("--terminal", help="gate terminal id (default: the first gate in merchants.yaml)")
    p.add_argument("--reader", type=reader_spec, default="mock", help=readers)
    p.add_argument("--lang", choices=["zh-CN", "en"], help="starting language (F3 switches)")
    p.add_argument("--no-operator", action="store_true", help="do not start the embedded operator")
    p = commands.add("tap", cmd_card_tap, "tap a mock card on a running terminal (pos run / pos gate)", "card")
    p.add_argument("card")
    p.add_argument("--terminal", required=True)
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="how long to wait for the decision")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `pos run`, `pos gate` or `pos card tap`")
