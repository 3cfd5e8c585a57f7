"""``pos campaign red-packet``: grant e-CNY red packets (数字人民币红包) to wallets (docs/tickets.md).

Each card's wallet gets one packet of the amount, waiting at the operator until its next load carries it (within the
tier's balance cap) or until it expires and goes back to its funder. The ``campaign`` group is shared with the
instant discounts' commands.
"""

from __future__ import annotations

import argparse

from pos.cli.errors import amount
from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet.errors import InvalidInput


def _day(text: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def cmd_red_packet(args: argparse.Namespace, home: Home) -> int:
    from pos.cards.online import grant_red_packets, refused
    from pos.sync.client import OperatorRefused
    from wire.errors import OperatorError

    card_ids = [c.strip() for c in args.cards.split(",") if c.strip()]
    if not card_ids or len(set(card_ids)) != len(card_ids):
        raise InvalidInput("--cards names each card once, separated by commas (c0001,c0002)")
    wallets = {cid: home.cards.load(cid).wallet_id for cid in card_ids}
    if len(set(wallets.values())) != len(wallets):
        raise InvalidInput("two of those cards are one wallet (a clone): name it once")
    try:
        answer = grant_red_packets(home, list(wallets.values()), args.amount, args.expires, args.funder)
    except (OperatorRefused, OperatorError) as exc:
        if not refused(exc):
            if isinstance(exc, InvalidInput):
                raise InvalidInput(str(exc)) from None  # the operator's 400 or 404: bad input (exit 2)
            raise
        emit(args, {"status": "refused", "reason": exc.code, "message": str(exc)}, f"REFUSED {exc.code}: {exc}")
        return EXIT_FAILED
    card_of = {w: c for c, w in wallets.items()}
    packets = [{"card_id": card_of.get(p.wallet_id), **p.to_json()} for p in answer.packets]
    emit(args, {"status": "granted", "grant_id": answer.grant_id, "packets": packets, "replayed": answer.replayed},
         f"red packet {answer.grant_id}: {format_fen(args.amount)} for {', '.join(card_ids)}, received at the next "
         f"load, until {args.expires} (funder {args.funder})")
    return EXIT_OK


def register(commands: Commands) -> None:
    """Add ``campaign red-packet``."""
    group = "campaign"
    commands.group(group, "campaigns: instant discounts and red packets")
    p = commands.add("red-packet", cmd_red_packet, "grant red packets to wallets, received at their next load", group)
    p.add_argument("--cards", required=True, metavar="CARDS", help="card ids, separated by commas")
    p.add_argument("--amount", type=amount, required=True, metavar="YUAN", help="for each card")
    p.add_argument("--expires", type=_day, required=True, metavar="YYYY-MM-DD",
                   help="the last day it can be received; then it goes back to the funder")
    p.add_argument("--funder", default="operator", metavar="operator|MID",
                   help="who pays: the operator (default) or a merchant id")
