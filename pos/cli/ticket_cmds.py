"""CLI commands of tickets sold online and the wallet's online balance: ``pos ticket sell|list|refund|tap`` and the
``--online`` loads of ``pos card load`` (docs/tickets.md).

``ticket sell``, ``list`` and ``refund`` are back-office calls (over HTTP with the admin token, else the home's
embedded operator); ``ticket tap`` is a gate's tap, headless, with a stored mock card: the gate's whole decision
(online ticket, pass, anti-passback, capacity, or a sale). Exit status: 0 done (or the gate opened), 1 refused (or
the gate stopped), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.gate.decision import places_left
from pos.home import Home
from pos.money import format_fen
from wallet.errors import InvalidInput


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _quantity(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError("the quantity is 1 to 20")
    return int(text)


def _refusal(args: argparse.Namespace, exc: Exception) -> int:
    """An operator's refusal (exit 1) as ``{"status": "refused", "reason", "message"}``; bad input (the operator's
    400 or 404: an unknown spot, product, wallet or order, a day that has passed) is raised as such (exit 2)."""
    from pos.cards.online import refused

    if not refused(exc):
        if isinstance(exc, InvalidInput):
            raise InvalidInput(str(exc)) from None  # over HTTP also an OperatorRefused: still bad input
        raise exc
    code = getattr(exc, "code", "refused")
    emit(args, {"status": "refused", "reason": code, "message": str(exc)}, f"REFUSED {code}: {exc}")
    return EXIT_FAILED


def _card_of_wallet(home: Home) -> dict[str, str]:
    """Wallet id: card id of the home's mock cards (the first card of a wallet; clones share it)."""
    out: dict[str, str] = {}
    for cid in home.cards.ids():
        out.setdefault(home.cards.load(cid).wallet_id, cid)
    return out


def load_online(args: argparse.Namespace, home: Home) -> int:
    """``pos card load CARD --online --amount YUAN``: top up the wallet's online balance at the operator."""
    from pos.cards.online import credit_online
    from pos.sync.client import OperatorRefused
    from wire.errors import OperatorError

    state = home.cards.load(args.card)
    try:
        answer = credit_online(home, state.wallet_id, args.amount)
    except (OperatorRefused, OperatorError) as exc:
        return _refusal(args, exc)
    emit(args, {"status": "loaded", "card_id": args.card, "online": True, "amount_fen": args.amount,
                "online_fen": answer.online_fen},
         f"loaded {format_fen(args.amount)} onto the online balance of {args.card}: "
         f"online balance {format_fen(answer.online_fen)}")
    return EXIT_OK


def check_online(args: argparse.Namespace) -> None:
    """``pos card issue ... --online YUAN``, before any card is made: within the tier's balance cap, and only for
    wallets the operator registers."""
    from pos.cards.manage import check_issue

    if args.online is None:
        return
    if args.expired or args.foreign:
        raise InvalidInput("--online needs wallets the operator registers: not with --expired or --foreign")
    check_issue(args.tier, args.online)  # the online balance has the tier's cap too


def fund_online(home: Home, card_ids: list[str], amount_fen: int | None) -> dict[str, dict[str, int]]:
    """``pos card issue ... --online YUAN``: each new card's wallet gets that online balance; card id:
    ``{"online_fen"}`` (nothing without ``--online``)."""
    from pos.cards.online import credit_online

    if not amount_fen:
        return {}
    return {cid: {"online_fen": credit_online(home, home.cards.load(cid).wallet_id, amount_fen).online_fen}
            for cid in card_ids}


def cmd_ticket_sell(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.online import sell_tickets
    from pos.sync.client import OperatorRefused
    from wire.errors import OperatorError

    state = home.cards.load(args.card)
    try:
        answer = sell_tickets(home, args.merchant, state.wallet_id, args.product, args.date, args.quantity)
    except (OperatorRefused, OperatorError) as exc:
        return _refusal(args, exc)
    o = answer.order
    emit(args, {"status": "sold", "card_id": args.card, "order": o.to_json(), "online_fen": answer.online_fen,
                "replayed": answer.replayed},
         f"sold {o.quantity} × {o.sku} for {o.day} at {o.merchant_id}: order {o.order_id}, "
         f"{format_fen(o.amount_fen)} from the online balance of {args.card} (left {format_fen(answer.online_fen)})")
    return EXIT_OK


def cmd_ticket_list(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.online import list_tickets

    wallet_id = home.cards.load(args.card).wallet_id if args.card else None
    answer = list_tickets(home, wallet_id, args.date, args.merchant, args.flagged)
    cards = _card_of_wallet(home)
    orders = [{**o.to_json(), "card_id": cards.get(o.wallet_id)} for o in answer.orders]
    lines = [f"{o['order_id']}  {o['card_id'] or o['wallet_id']}  {o['merchant_id']}  {o['day']}  "
             f"{o['quantity']} × {o['sku']}  {format_fen(o['amount_fen'])}  {o['status']}  used {o['used']}"
             + (f"  FLAGGED {o['flag']}" if o["flag"] else "") for o in orders]
    emit(args, {"orders": orders}, "\n".join(lines) or "no tickets")
    return EXIT_OK


def cmd_ticket_refund(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.online import refund_tickets
    from pos.sync.client import OperatorRefused
    from wire.errors import OperatorError

    try:
        answer = refund_tickets(home, args.order)
    except (OperatorRefused, OperatorError) as exc:
        return _refusal(args, exc)
    o = answer.order
    emit(args, {"status": "refunded", "order": o.to_json(), "online_fen": answer.online_fen,
                "replayed": answer.replayed},
         f"refunded order {o.order_id}: {format_fen(o.amount_fen)} back to the online balance "
         f"(now {format_fen(answer.online_fen)})" + (" (already refunded)" if answer.replayed else ""))
    return EXIT_OK


def cmd_ticket_tap(args: argparse.Namespace, home: Home) -> int:
    """One tap of a stored mock card at a gate, headless: the gate's full decision."""
    from ecny_nfc.mock import MockReader
    from pos.gate.ticket_gate import Gate

    home.cards.load(args.card)  # an unknown card is bad input before the gate opens anything
    gate = Gate(home, args.terminal)
    try:
        gate.online.operator_url = args.operator
        sku = args.product or gate.products[0].sku
        gate.product(sku)
        with home.cards.open(args.card) as applet:
            reader = MockReader()
            reader.present(applet)
            decision = gate.admit(reader, sku, args.quantity, timeout=args.timeout)
    finally:
        gate.close()
    if decision is None:
        raise InvalidInput(f"card {args.card} did not reach the gate")
    lang = args.lang or "en"
    data: dict[str, Any] = decision.to_json(lang)
    g = data["gate"]
    said = f"{data['message']}: {g['next_step']}" if not g["open"] and g["next_step"] else data["message"]
    emit(args, data, f"{'OPEN' if g['open'] else 'STOP'} {g['code']}: {said}  (entries today {g['entries_today']}, "
                     f"{places_left(int(g['remaining']), lang)})")
    return EXIT_OK if decision.open else EXIT_FAILED


def register(commands: Commands) -> None:
    """Add ``ticket sell``, ``ticket list``, ``ticket refund`` and ``ticket tap``."""
    group = "ticket"
    commands.group(group, "tickets sold online and checked at the gate")
    p = commands.add("sell", cmd_ticket_sell, "sell tickets online from the wallet's online balance", group)
    p.add_argument("--merchant", required=True, metavar="MID", help="the scenic spot (merchant id)")
    p.add_argument("--card", required=True)
    p.add_argument("--product", required=True, metavar="SKU")
    p.add_argument("--date", required=True, type=_day, metavar="YYYY-MM-DD", help="the visit day")
    p.add_argument("--quantity", type=_quantity, default=1, metavar="N")
    p = commands.add("list", cmd_ticket_list, "tickets sold online, with the entries used and flags", group)
    p.add_argument("--card")
    p.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="the visit day")
    p.add_argument("--merchant", metavar="MID")
    p.add_argument("--flagged", action="store_true", help="only orders flagged (used beyond their tickets)")
    p = commands.add("refund", cmd_ticket_refund, "refund an unused order to the wallet's online balance", group)
    p.add_argument("order", metavar="ORDER")
    p = commands.add("tap", cmd_ticket_tap, "tap a mock card at a gate, headless (online ticket, pass or sale)",
                     group)
    p.add_argument("--terminal", required=True, metavar="TID", help="a gate terminal")
    p.add_argument("--card", required=True)
    p.add_argument("--product", metavar="SKU", help="what a sale buys (default: the gate's first ticket)")
    p.add_argument("--quantity", type=_quantity, default=1, metavar="N")
    p.add_argument("--operator", metavar="URL", help="the operator the gate asks about online tickets")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--lang", choices=["en", "zh-CN"])


__all__ = ["check_online", "fund_online", "load_online", "register"]
