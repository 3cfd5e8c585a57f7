"""The wire contract of the wallet's online balance, tickets sold online and red packets: the request bodies the
operator accepts and the answers it gives (see docs/tickets.md).

Back-office calls: credit a wallet's online balance, sell and refund tickets, list them, grant red packets, list a
wallet's red packets. Terminal calls (signed by a gate): the ticket sync (report used entries and gate sales, learn
the orders changed since a version) and the look-up of one wallet's tickets for a day.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from wire.models import WireModel

REQUEST_ID = r"^[A-Za-z0-9][A-Za-z0-9-]{5,39}$"  # a caller's idempotency key (order, credit, grant)
DAY = r"^\d{4}-\d{2}-\d{2}$"
WALLET_ID = r"^\d{16}$"
MERCHANT_ID = r"^\d{15}$"
SKU = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_QUANTITY = 20  # tickets in one order (as at the gate)
MAX_USES = 500  # used-entry counts reported in one ticket sync
MAX_GRANT = 1000  # wallets in one red-packet grant


# -- the online balance ---------------------------------------------------------------------------------------------
class OnlineCreditRequest(BaseModel):
    credit_id: str = Field(pattern=REQUEST_ID, description="the caller's idempotency key")
    amount_fen: int = Field(gt=0, le=10**12)


class OnlineBalanceAnswer(WireModel):
    wallet_id: str
    credit_id: str
    amount_fen: int
    online_fen: int = Field(description="the wallet's online balance after the credit")
    replayed: bool


# -- tickets --------------------------------------------------------------------------------------------------------
class TicketSaleRequest(BaseModel):
    order_id: str = Field(pattern=REQUEST_ID, description="the caller's idempotency key, the order's id")
    merchant_id: str = Field(pattern=MERCHANT_ID)
    wallet_id: str = Field(pattern=WALLET_ID)
    sku: str = Field(pattern=SKU)
    day: str = Field(pattern=DAY, description="the visit day (China Standard Time)")
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)


class TicketOrder(WireModel):
    order_id: str
    merchant_id: str
    wallet_id: str
    sku: str
    day: str
    quantity: int
    unit_fen: int
    amount_fen: int
    status: str = Field(description="sold | refunded")
    used: int = Field(description="entries the gates reported, all gates together")
    flag: str | None = Field(description="overused (more entries than tickets: used at two gates offline) | "
                                         "used_after_refund | null")
    created_ms: int
    refunded_ms: int | None


class TicketSaleAnswer(WireModel):
    order: TicketOrder
    online_fen: int = Field(description="the wallet's online balance after the sale or refund")
    replayed: bool


class TicketListAnswer(WireModel):
    orders: list[TicketOrder]


class GateTicket(WireModel):
    """An order as a gate needs it."""

    order_id: str
    wallet_id: str
    sku: str
    day: str
    quantity: int
    status: str = Field(description="sold | refunded")
    used: int = Field(description="entries reported by all gates")
    used_here: int = Field(description="entries reported by the asking gate")


class TicketUse(BaseModel):
    order_id: str = Field(pattern=REQUEST_ID)
    used: int = Field(ge=0, le=1000, description="entries on this order at this gate so far (a running total)")


class TicketSyncRequest(BaseModel):
    since: int = Field(ge=0, le=2**62, description="the version of the last answer the gate recorded")
    day: str = Field(pattern=DAY, description="the gate's day: orders for this day and later are sent")
    gate_sold: int = Field(ge=0, le=10**7, description="tickets this gate sold itself on that day (a running total)")
    uses: list[TicketUse] = Field(default_factory=list, max_length=MAX_USES)


class TicketSyncAnswer(WireModel):
    version: int
    since: int
    day: str
    orders: list[GateTicket] = Field(description="orders changed after `since`, oldest change first")
    more: bool = Field(description="more changes wait: ask again from `version`")
    others_sold: int = Field(description="tickets the spot's other gates reported selling on that day")
    online_sold: int = Field(description="tickets of that day sold online and not refunded")
    capacity: int


class TicketLookupAnswer(WireModel):
    orders: list[GateTicket]


# -- red packets ----------------------------------------------------------------------------------------------------
class RedPacketGrantRequest(BaseModel):
    grant_id: str = Field(pattern=REQUEST_ID, description="the caller's idempotency key")
    wallet_ids: list[Annotated[str, Field(pattern=WALLET_ID)]] = Field(min_length=1, max_length=MAX_GRANT)
    amount_fen: int = Field(gt=0, le=10**10, description="for each wallet")
    expires: str = Field(pattern=DAY, description="the last day it can be received (China Standard Time)")
    funder: str = Field(default="operator", pattern=r"^(operator|\d{15})$",
                        description="who pays: the operator or a merchant id; an expired packet goes back to it")


class RedPacket(WireModel):
    packet_id: str
    grant_id: str
    wallet_id: str
    amount_fen: int
    funder: str
    expires: str
    status: str = Field(description="waiting | on_load (on a load token the card has not confirmed) | received | "
                                    "returned (expired, back to the funder)")
    load_counter: int | None
    created_ms: int


class RedPacketGrantAnswer(WireModel):
    grant_id: str
    packets: list[RedPacket]
    replayed: bool


class RedPacketListAnswer(WireModel):
    packets: list[RedPacket]
