"""The tester's back-office calls beyond the card itself: the wallet's online balance, tickets sold online, red
packets (docs/tickets.md).

Each goes to the operator over HTTP with the admin token and, when the operator cannot be reached (or another
operator answers that does not know the wallet), to the home's embedded operator in-process, as the other tester
tools do (:mod:`pos.cards.manage`). Every money call carries an id the caller made (credit, order, grant), so a call
repeated after a lost answer changes nothing twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pos.home import Home
from pos.sync.client import OperatorClient, OperatorRefused, OperatorUnavailable, RetryPolicy
from wire.errors import NotFound
from wire.models import WalletAnswer
from wire.tickets import (
    OnlineBalanceAnswer,
    RedPacketGrantAnswer,
    RedPacketListAnswer,
    TicketListAnswer,
    TicketSaleAnswer,
)

T = TypeVar("T")
FALLBACK_CODES = ("unknown_wallet", "bad_admin_token")  # another home's operator answered: ask our own
REFUSALS = ("over_balance_limit", "wallet_revoked")  # 400 and 403 answers that are refusals, not bad input


def new_id(prefix: str) -> str:
    """An idempotency key: ``prefix`` and 12 random hex digits (``TK3F9A...``)."""
    return prefix + secrets.token_hex(6).upper()


def refused(exc: Exception) -> bool:
    """Whether an operator's error is a refusal (exit 1, ``{"status": "refused"}``) rather than bad input (exit 2):
    a 403 or 409, or one of :data:`REFUSALS`."""
    return getattr(exc, "status", 0) in (403, 409) or getattr(exc, "code", "") in REFUSALS


@contextmanager
def _local(home: Home) -> Iterator[Any]:
    from pos.composition import local_operator  # the embedded operator, built by the composition root

    with local_operator(home) as op:
        yield op


def back_office(home: Home, http: Callable[[OperatorClient], T], local: Callable[[Any], T] | None,
                operator_url: str | None = None, attempts: int = 2) -> T:
    """``http(client)`` against the operator, else ``local(operator)`` in-process (see the module's docstring);
    without ``local``, what the operator's failure was."""
    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=attempts), timeout=5.0) as cli:
            return http(cli)
    except OperatorUnavailable:
        if local is None:
            raise
    except OperatorRefused as exc:
        if exc.code not in FALLBACK_CODES or local is None:
            raise
    with _local(home) as op:
        return local(op)


def credit_online(home: Home, wallet_id: str, amount_fen: int, operator_url: str | None = None) -> OnlineBalanceAnswer:
    """Top up the wallet's online balance (within the tier's balance cap)."""
    credit_id = new_id("OC")
    return back_office(
        home,
        lambda cli: OnlineBalanceAnswer.model_validate(cli.call(
            "POST", f"/v1/admin/wallets/{wallet_id}/online-credits",
            {"credit_id": credit_id, "amount_fen": amount_fen}, signed=False)),
        lambda op: op.credit_online(credit_id, wallet_id, amount_fen), operator_url)


def online_view(home: Home, wallet_id: str, operator_url: str | None = None) -> dict[str, Any]:
    """For ``pos card show``: ``{"online_fen", "red_packets": [...]}`` as the operator has them; ``online_fen`` null
    for a wallet it does not know, or when neither the operator nor the home's embedded one can tell (a read-only
    home: showing a card writes nothing)."""
    def http(cli: OperatorClient) -> tuple[WalletAnswer, RedPacketListAnswer]:
        w = WalletAnswer.model_validate(cli.call("GET", f"/v1/admin/wallets/{wallet_id}", signed=False))
        rp = RedPacketListAnswer.model_validate(cli.call("GET", f"/v1/admin/wallets/{wallet_id}/red-packets",
                                                         signed=False))
        return w, rp

    def local(op: Any) -> tuple[WalletAnswer, RedPacketListAnswer]:
        return op.wallet(wallet_id), op.red_packets.of_wallet(wallet_id)

    embedded = (home.root / "operator" / "operator.db").exists()  # else there is none to ask: make none
    try:
        wallet, packets = back_office(home, http, local if embedded else None, operator_url, attempts=1)
    except (NotFound, OperatorRefused) as exc:
        if getattr(exc, "code", "") != "unknown_wallet":
            raise
        return {"online_fen": None, "red_packets": []}
    except Exception:  # nobody to ask, or the embedded operator cannot open (a read-only home, a damaged file)
        return {"online_fen": None, "red_packets": []}
    return {"online_fen": wallet.online_fen,
            "red_packets": [{k: p[k] for k in ("packet_id", "amount_fen", "status", "expires", "funder")}
                            for p in packets.packets]}


def grant_red_packets(home: Home, wallet_ids: list[str], amount_fen: int, expires: str, funder: str = "operator",
                      operator_url: str | None = None) -> RedPacketGrantAnswer:
    """One red packet of ``amount_fen`` for each wallet, received at its next load, until ``expires``."""
    body = {"grant_id": new_id("RP"), "wallet_ids": wallet_ids, "amount_fen": amount_fen, "expires": expires,
            "funder": funder}
    return back_office(
        home,
        lambda cli: RedPacketGrantAnswer.model_validate(cli.call("POST", "/v1/admin/red-packets", body,
                                                                 signed=False)),
        lambda op: op.red_packets.grant(body["grant_id"], wallet_ids, amount_fen, expires, funder), operator_url)


def sell_tickets(home: Home, merchant_id: str, wallet_id: str, sku: str, day: str, quantity: int,
                 operator_url: str | None = None) -> TicketSaleAnswer:
    """Sell tickets online from the wallet's online balance; the answer carries the order."""
    order_id = new_id("TK")
    body = {"order_id": order_id, "merchant_id": merchant_id, "wallet_id": wallet_id, "sku": sku, "day": day,
            "quantity": quantity}
    return back_office(
        home,
        lambda cli: TicketSaleAnswer.model_validate(cli.call("POST", "/v1/admin/tickets", body, signed=False)),
        lambda op: op.tickets.sell(order_id, merchant_id, wallet_id, sku, day, quantity), operator_url)


def list_tickets(home: Home, wallet_id: str | None = None, day: str | None = None, merchant_id: str | None = None,
                 flagged: bool = False, operator_url: str | None = None) -> TicketListAnswer:
    """Orders as the operator has them (with the entries the gates reported and their flags)."""
    params: dict[str, Any] = {k: v for k, v in (("wallet_id", wallet_id), ("day", day),
                                                ("merchant_id", merchant_id)) if v is not None}
    if flagged:
        params["flagged"] = "true"
    return back_office(
        home,
        lambda cli: TicketListAnswer.model_validate(cli.call("GET", "/v1/admin/tickets", params=params,
                                                             signed=False)),
        lambda op: op.tickets.find(wallet_id, day, merchant_id, flagged), operator_url)


def refund_tickets(home: Home, order_id: str, operator_url: str | None = None) -> TicketSaleAnswer:
    """Refund an order to the wallet's online balance (refused once a gate reported an entry on it)."""
    return back_office(
        home,
        lambda cli: TicketSaleAnswer.model_validate(cli.call("POST", f"/v1/admin/tickets/{order_id}/refund", {},
                                                             signed=False)),
        lambda op: op.tickets.refund(order_id), operator_url)
