"""The answers of the merchant back office: a corporate wallet's statement for one business day, and a chain's
daily sweep (现金归集). Amounts are fen; days are the operator's China Standard Time business days (YYYY-MM-DD)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wire.models import WireModel


class StatementLine(WireModel):
    kind: str = Field(description="payments (one terminal's settled vouchers and refunds), another credit's kind "
                                  "(e.g. online), or total")
    terminal_id: str | None
    count: int = Field(description="payments (or credits) counted in gross")
    gross_fen: int = Field(description="what the sales were worth: paid + discount")
    discount_fen: int = Field(description="the part of gross that campaigns paid")
    refund_count: int
    refunds_fen: int
    fee_fen: int
    net_fen: int = Field(description="gross - refunds - fees: what reached the wallet")


class Sweep(WireModel):
    store_id: str
    parent_id: str
    day: str = Field(description="the business day whose net it moved")
    amount_fen: int = Field(description="moved from the store's wallet to the parent's (negative: the other way)")
    movements: int = Field(description="the store's wallet movements it moved on")
    created_ms: int
    replayed: bool = Field(default=False, description="on file already: this call moved nothing")


class StoreStatement(WireModel):
    merchant_id: str
    lines: list[StatementLine]
    totals: StatementLine
    sweep: Sweep | None = Field(description="the day's sweep to the chain's parent (pooling stores)")
    sweep_due: bool = Field(description="a pooling store's closed day that no sweep has moved yet")


class StatementAnswer(WireModel):
    merchant_id: str
    date: str
    closed: bool = Field(description="the business day is over at the operator")
    role: Literal["merchant", "store", "parent"]
    parent_id: str | None
    pools: str | None = Field(description="daily: the chain's stores move their day net to the parent")
    stores: list[StoreStatement] = Field(description="the merchant itself, or a parent's stores (and the parent "
                                                     "first when it has terminals or credits of its own)")
    totals: StatementLine
    sweeps_in: list[Sweep] = Field(description="a parent's: the sweeps of its stores for the day")
    swept_in_fen: int
    opening_fen: int = Field(description="the merchant's wallet before the day")
    closing_fen: int = Field(description="the merchant's wallet after the day, its sweeps included")
    sweep_due: bool


class SweepAnswer(WireModel):
    date: str
    sweeps: list[Sweep] = Field(description="one per pooling store and day moved (earlier days not swept yet "
                                            "first), or the one on file")
    moved_fen: int = Field(description="moved by this call (0 when every sweep was on file)")
