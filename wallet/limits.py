"""Wallet tier limits and offline caps, as data. All amounts are integer fen.

Tier figures come from public statements (see the README); where a cap is unknown or absent it is ``None``.
Operators may set lower limits, so the terminal reads its own copy from merchants.yaml where given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

YUAN = 100  # fen per yuan


@dataclass(frozen=True, slots=True)
class TierLimits:
    """Caps that follow from a wallet's KYC tier. ``None`` means no cap."""

    tier: int
    balance_max: int | None
    single_max: int | None
    daily_max: int | None


TIER_LIMITS: dict[int, TierLimits] = {
    1: TierLimits(1, None, None, None),
    2: TierLimits(2, 500_000 * YUAN, 50_000 * YUAN, 100_000 * YUAN),
    3: TierLimits(3, 20_000 * YUAN, 5_000 * YUAN, None),
    4: TierLimits(4, 10_000 * YUAN, 2_000 * YUAN, 5_000 * YUAN),
}


@dataclass(frozen=True, slots=True)
class OfflineCaps:
    """Caps on offline spending between two syncs of the card (a load resets the usage)."""

    single_max: int = 500 * YUAN
    cumulative_max: int = 5_000 * YUAN
    count_max: int = 10

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def tier_limits(tier: int) -> TierLimits:
    """Limits for ``tier``; raises KeyError for a tier that does not exist."""
    return TIER_LIMITS[tier]


def effective_cap(*caps: int | None) -> int | None:
    """The lowest of the caps that are set, or None when none is."""
    set_caps = [c for c in caps if c is not None]
    return min(set_caps) if set_caps else None
