"""The terminal's offline risk checks, made before it asks a card to pay (the card checks again itself)."""

from __future__ import annotations

from pos.payment.reasons import Reason
from wallet.card import china_day
from wallet.limits import OfflineCaps, effective_cap, tier_limits
from wallet.protocol import CardInfo


def check_limits(info: CardInfo, tier: int, amount_fen: int, caps: OfflineCaps, now_ms: int) -> Reason | None:
    """The first limit this payment would break, or None. ``tier`` comes from the verified certificate."""
    limits = tier_limits(tier)
    if amount_fen > info.balance_fen:
        return Reason.INSUFFICIENT_BALANCE
    single = effective_cap(limits.single_max, info.single_max)
    if single is not None and amount_fen > single:
        return Reason.OVER_SINGLE_LIMIT
    daily = effective_cap(limits.daily_max, info.daily_max)
    spent_today = info.day_spent if info.day >= china_day(now_ms) else 0
    if daily is not None and spent_today + amount_fen > daily:
        return Reason.OVER_DAILY_LIMIT
    if (amount_fen > min(caps.single_max, info.offline_single_max)
            or info.offline_amount + amount_fen > min(caps.cumulative_max, info.offline_cumulative_max)
            or info.offline_count + 1 > min(caps.count_max, info.offline_count_max)):
        return Reason.OVER_OFFLINE_LIMIT
    return None


def offline_left(info: CardInfo, caps: OfflineCaps, paying: int) -> int:
    """Offline payments the wallet may still make (the card's and this terminal's count caps) once ``paying``
    more are made."""
    return max(0, min(caps.count_max, info.offline_count_max) - info.offline_count - paying)
