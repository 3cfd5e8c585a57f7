"""The HTTP routes of the online balance, tickets sold online and red packets (see docs/tickets.md).

Gates (signed terminal calls): ``POST /v1/tickets/sync`` and ``GET /v1/tickets/lookup``. Back office (admin token):
online credits, ticket sales, refunds and lists, red-packet grants and a wallet's red packets.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from bank.app import ADMIN, WALLET_ID, Terminal, _json_body, errors, parse_body
from bank.service import Operator
from bank.tickets import Tickets
from wire import tickets as wt
from wire.tickets import (
    OnlineBalanceAnswer,
    OnlineCreditRequest,
    RedPacketGrantAnswer,
    RedPacketGrantRequest,
    RedPacketListAnswer,
    TicketListAnswer,
    TicketLookupAnswer,
    TicketSaleAnswer,
    TicketSaleRequest,
    TicketSyncAnswer,
    TicketSyncRequest,
)

ORDER_ID = Annotated[str, Path(pattern=wt.REQUEST_ID)]
DAY_Q = Annotated[str, Query(pattern=wt.DAY)]


def add_ticket_routes(app: FastAPI, op: Operator) -> None:
    """Add the routes of online balances, online tickets and red packets to ``app`` (over ``op``)."""
    tickets: Tickets = op.tickets

    @app.post("/v1/tickets/sync", response_model=TicketSyncAnswer, responses=errors(403, 404, 413),
              openapi_extra=_json_body(TicketSyncRequest))
    def ticket_sync(request: Request, term: Terminal) -> TicketSyncAnswer:
        """A gate's ticket sync: its used entries per order and its own sales of the day (running totals) go in; the
        spot's orders for that day and later changed after ``since`` come back, with the day's counts."""
        req = parse_body(TicketSyncRequest, request.state.body)
        return tickets.gate_sync(term, req.since, req.day, req.gate_sold, req.uses)

    @app.get("/v1/tickets/lookup", response_model=TicketLookupAnswer, responses=errors(403, 404))
    def ticket_lookup(term: Terminal, wallet_id: Annotated[str, Query(pattern=wt.WALLET_ID)],
                      day: DAY_Q) -> TicketLookupAnswer:
        """One wallet's orders at the gate's spot for a day (a gate asks for a ticket it has not heard of)."""
        return tickets.lookup(term, wallet_id, day)

    @app.post("/v1/admin/wallets/{wallet_id}/online-credits", dependencies=ADMIN, response_model=OnlineBalanceAnswer,
              responses=errors(403, 404, 409, 413), openapi_extra=_json_body(OnlineCreditRequest))
    async def online_credit(wallet_id: WALLET_ID, request: Request) -> OnlineBalanceAnswer:
        """Top up the wallet's online balance, once per ``credit_id`` (within the tier's balance cap)."""
        req = parse_body(OnlineCreditRequest, await request.body())
        return await run_in_threadpool(op.credit_online, req.credit_id, wallet_id, req.amount_fen)

    @app.post("/v1/admin/tickets", dependencies=ADMIN, response_model=TicketSaleAnswer,
              responses=errors(403, 404, 409, 413), openapi_extra=_json_body(TicketSaleRequest))
    async def sell_tickets(request: Request) -> TicketSaleAnswer:
        """Sell tickets of a spot for a day from the wallet's online balance, once per ``order_id``; 409
        ``sold_out`` at the day's capacity, ``insufficient_online_balance``."""
        req = parse_body(TicketSaleRequest, await request.body())
        return await run_in_threadpool(tickets.sell, req.order_id, req.merchant_id, req.wallet_id, req.sku, req.day,
                                       req.quantity)

    @app.get("/v1/admin/tickets", dependencies=ADMIN, response_model=TicketListAnswer, responses=errors())
    def list_tickets(wallet_id: Annotated[str | None, Query(pattern=wt.WALLET_ID)] = None,
                     day: Annotated[str | None, Query(pattern=wt.DAY)] = None,
                     merchant_id: Annotated[str | None, Query(pattern=wt.MERCHANT_ID)] = None,
                     flagged: bool = False) -> TicketListAnswer:
        """Orders, oldest first (at most 5,000), with the entries the gates reported and their flags."""
        return tickets.find(wallet_id, day, merchant_id, flagged)

    @app.post("/v1/admin/tickets/{order_id}/refund", dependencies=ADMIN, response_model=TicketSaleAnswer,
              responses=errors(404, 409, 413))
    def refund_tickets(order_id: ORDER_ID) -> TicketSaleAnswer:
        """Refund an order to the wallet's online balance: 409 ``ticket_used`` once a gate reported an entry on it.
        Idempotent."""
        return tickets.refund(order_id)

    @app.post("/v1/admin/red-packets", dependencies=ADMIN, response_model=RedPacketGrantAnswer,
              responses=errors(403, 404, 409, 413), openapi_extra=_json_body(RedPacketGrantRequest))
    async def grant_red_packets(request: Request) -> RedPacketGrantAnswer:
        """Grant a red packet to each wallet, received at its next load (once per ``grant_id``)."""
        req = parse_body(RedPacketGrantRequest, await request.body())
        return await run_in_threadpool(op.red_packets.grant, req.grant_id, req.wallet_ids, req.amount_fen,
                                       req.expires, req.funder)

    @app.get("/v1/admin/wallets/{wallet_id}/red-packets", dependencies=ADMIN, response_model=RedPacketListAnswer,
             responses=errors())
    def wallet_red_packets(wallet_id: WALLET_ID) -> RedPacketListAnswer:
        """The wallet's red packets and their states (waiting, on_load, received, returned)."""
        return op.red_packets.of_wallet(wallet_id)
