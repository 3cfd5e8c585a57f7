"""The double-spend rules, applied to verified vouchers inside the batch's transaction.

A voucher whose (wallet, counter) is already settled with the same body is a ``duplicate``; with another body, or
one that would take the wallet's settled spending over what was loaded onto it, it is a ``double_spend``: the first
settled stands and the wallet is revoked. A voucher that would take the wallet's day over its tier's daily cap is
``over_daily_limit``.

A voucher from a revoked wallet that its terminal took while it already had the denylist version revoking that wallet
(the version the upload declares, signed) is ``wallet_revoked``: it should have been declined offline, and it is the
merchant's loss. One taken before the terminal could have known settles under every other rule.

Loads count once the card took them: an issued load token that is not confirmed yet counts only when a voucher
proves it, its card's balance after the payment plus what the wallet spent up to it being more than the loads
counted so far (:func:`bank.commit.prove_loads`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bank.parse import Judged
from bank.reasons import DOUBLE_SPEND, OVER_DAILY_LIMIT, WALLET_REVOKED
from wallet.limits import TIER_LIMITS


@dataclass(slots=True)
class WalletState:
    """A wallet's row as the batch found it, and what the batch changes: spending added, revocation."""

    loaded: int | None  # None: the operator never saw the opening balance (only the counter rule applies)
    spent: int
    status: str
    spent_delta: int = 0
    revoke: bool = False
    settled_now: list[tuple[int, int]] = field(default_factory=list)  # (counter, amount) settled by this batch
    prove_loads: Callable[[WalletState, Judged], int] | None = None  # see bank.commit.prove_loads
    known_revoked: bool = False  # the uploading terminal's denylist version had it revoked


def judge(j: Judged, w: WalletState, on_file: dict[str, str], daily: dict[tuple[str, str], int]) -> bool:
    """Decide a verified voucher: True when it settles (``w``, ``on_file`` and ``daily`` then count it), else its
    status and reason are set (and ``w.revoke`` on a double spend)."""
    assert j.wallet_id is not None and j.voucher_id is not None
    prior = on_file.get(j.voucher_id)
    if prior is not None:
        if prior == j.body_hash:
            j.status = "duplicate"
        else:
            j.status, j.reason = "rejected", DOUBLE_SPEND
            w.revoke = True
        return False
    if w.known_revoked:
        j.status, j.reason = "rejected", WALLET_REVOKED
        return False
    if w.loaded is not None and w.spent + w.spent_delta + j.amount_fen > w.loaded:
        if w.prove_loads is not None:
            w.loaded += w.prove_loads(w, j)
        if w.spent + w.spent_delta + j.amount_fen > w.loaded:
            j.status, j.reason = "rejected", DOUBLE_SPEND
            w.revoke = True
            return False
    daily_max = TIER_LIMITS[j.tier].daily_max
    key = (j.wallet_id, j.day)
    if daily_max is not None and daily[key] + j.amount_fen > daily_max:
        j.status, j.reason = "rejected", OVER_DAILY_LIMIT
        return False
    daily[key] += j.amount_fen
    w.spent_delta += j.amount_fen
    w.settled_now.append((j.body.counter if j.body is not None else 0, j.amount_fen))
    on_file[j.voucher_id] = j.body_hash
    j.status = "settled"
    return True
