"""Instant-discount campaigns (消费立减金) on the wire: the back office's campaign request and answers, and what a
terminal receives at sync (its merchant's campaigns, each with its offline share). The claims that go up with the
vouchers are :mod:`wire.claims`; their answers are :class:`wire.models.ClaimAnswer`. Rules: docs/campaigns.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wire.models import WireModel

CAMPAIGN_ID = r"^[a-z0-9][a-z0-9-]{0,31}$"
DAY = r"^\d{4}-\d{2}-\d{2}$"


class CampaignRequest(BaseModel):
    """A campaign to create (back office): ``discount_fen`` off a payment of at least ``min_amount_fen``, at most
    ``per_wallet_per_day`` times per wallet and China day, at ``merchants``, from ``start`` to ``end`` (China days,
    inclusive), until ``budget_fen`` is spent; each terminal gets ``offline_share_fen`` of it at every sync."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(pattern=CAMPAIGN_ID)
    name_zh: str = Field(min_length=1, max_length=64)
    name_en: str = Field(min_length=1, max_length=64)
    funded_by: str = Field(pattern=r"^(operator|\d{15})$", description="operator, or the funding merchant's id")
    discount_fen: int = Field(gt=0, le=10**8)
    min_amount_fen: int = Field(gt=1, le=10**10)
    per_wallet_per_day: int = Field(default=1, ge=1, le=100)
    merchants: list[Annotated[str, Field(pattern=r"^\d{15}$")]] = Field(min_length=1, max_length=1000)
    start: str = Field(pattern=DAY)
    end: str = Field(pattern=DAY)
    budget_fen: int = Field(gt=0, le=10**12)
    offline_share_fen: int = Field(gt=0, le=10**12)

    @field_validator("start", "end")
    @classmethod
    def _real_day(cls, value: str) -> str:
        dt.date.fromisoformat(value)  # ValueError: not a calendar day
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignRequest:
        if self.discount_fen >= self.min_amount_fen:
            raise ValueError("the discount must be less than the minimum amount (something is left to pay)")
        if self.end < self.start:
            raise ValueError("the end day is before the start day")
        if not self.discount_fen <= self.offline_share_fen <= self.budget_fen:
            raise ValueError("the offline share must be at least one discount and at most the budget")
        if len(set(self.merchants)) != len(self.merchants):
            raise ValueError("a merchant is listed twice")
        return self


class CampaignAnswer(CampaignRequest, WireModel):
    """A campaign on file with what it has spent: ``reserved_fen`` is held by terminals' offline shares, ``left_fen``
    is neither spent nor reserved; ``paid`` claims (of them ``flagged``) and ``refused`` ones."""

    model_config = ConfigDict(extra="ignore")

    status: str = Field(description="scheduled | running | ended (by the operator's China day)")
    spent_fen: int
    reserved_fen: int
    left_fen: int
    paid: int
    paid_fen: int
    flagged: int
    refused: int
    refused_fen: int
    created_ms: int


class CampaignList(WireModel):
    campaigns: list[CampaignAnswer]


class TerminalCampaign(WireModel):
    """A campaign as a terminal applies it, with the share of the budget it may give until its next sync."""

    campaign_id: str
    name_zh: str
    name_en: str
    discount_fen: int
    min_amount_fen: int
    per_wallet_per_day: int
    start: str
    end: str
    share_fen: int


class CampaignShares(WireModel):
    terminal_id: str
    merchant_id: str
    day: str = Field(description="the operator's China day")
    campaigns: list[TerminalCampaign]
