"""Instant discounts (消费立减金) at the terminal: which campaign takes how much off a charge, before the tap.

The campaigns come with each sync (:mod:`pos.sync.campaigns`) as a ``campaigns`` ledger entry: the campaigns of the
terminal's merchant, each with the terminal's share of its budget, and ``upload_seq``, the last ledger entry the
sync had uploaded before it asked for them. A campaign applies to a charge when today (China time, the terminal's
clock) is within its days, the charge is at least its minimum, and what the terminal has given of it since
``upload_seq`` leaves room for one more discount in its share. Of the campaigns that apply, the largest discount
wins (one discount per payment). With no share left, the charge is at full price until the next sync brings a
fresh share.

The wallet is not known before the tap, so the terminal cannot keep a campaign's "once per wallet per day"; the
operator settles that rule (:mod:`bank.claims`). The discount is decided when the charge starts: the intent, the
PAY, the card's limits and the voucher all see the net amount; the payment entry records the discount beside it
(``data.discount``: campaign id, gross, discount).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pos.i18n import tr
from pos.ledger import Ledger
from pos.money import format_fen
from wallet.card import china_day_text


@dataclass(frozen=True, slots=True)
class Offer:
    """A campaign's discount on one charge of ``gross_fen``."""

    campaign_id: str
    name_zh: str
    name_en: str
    gross_fen: int
    discount_fen: int

    @property
    def net_fen(self) -> int:
        """What the card pays."""
        return self.gross_fen - self.discount_fen

    def name(self, lang: str) -> str:
        return self.name_zh if lang.startswith("zh") else self.name_en

    def line(self, lang: str) -> str:
        """"立减 ¥5.00 · 实付 ¥30.00" / "instant discount ¥5.00 · to pay ¥30.00"."""
        return tr("discount.line", lang, discount=format_fen(self.discount_fen), net=format_fen(self.net_fen))

    def to_data(self) -> dict[str, Any]:
        """What the intent and the payment entry record."""
        return {"campaign_id": self.campaign_id, "gross_fen": self.gross_fen, "discount_fen": self.discount_fen}


def quote(ledger: Ledger, gross_fen: int, now_ms: int) -> Offer | None:
    """The discount the terminal gives a charge of ``gross_fen`` now, or None."""
    entry = ledger.latest_campaigns()
    if entry is None:
        return None
    day = china_day_text(now_ms)
    applicable = [c for c in entry.data.get("campaigns", [])
                  if c["start"] <= day <= c["end"] and gross_fen >= c["min_amount_fen"]
                  and 0 < c["discount_fen"] < gross_fen]
    if not applicable:
        return None
    given = ledger.discounts_since(int(entry.data.get("upload_seq", entry.seq)))
    for c in sorted(applicable, key=lambda c: (-c["discount_fen"], c["campaign_id"])):
        if given.get(c["campaign_id"], 0) + c["discount_fen"] <= c["share_fen"]:
            return Offer(c["campaign_id"], c["name_zh"], c["name_en"], gross_fen, c["discount_fen"])
    return None


def shares_left(ledger: Ledger) -> dict[str, int]:
    """{campaign id: fen} of each campaign's share this terminal may still give (until the next sync)."""
    entry = ledger.latest_campaigns()
    if entry is None:
        return {}
    given = ledger.discounts_since(int(entry.data.get("upload_seq", entry.seq)))
    return {c["campaign_id"]: max(0, c["share_fen"] - given.get(c["campaign_id"], 0))
            for c in entry.data.get("campaigns", [])}
