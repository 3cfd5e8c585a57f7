"""Issuing a card: a fresh key, a wallet id, a certificate from the operator's wallet CA, limits from the tier."""

from __future__ import annotations

import datetime as dt

from wallet import clock
from wallet.card import CardState
from wallet.errors import InvalidInput
from wallet.ids import new_wallet_id
from wallet.keys import key_to_pem, new_key
from wallet.limits import TIER_LIMITS, OfflineCaps
from wallet.pki import CertificateAuthority, OperatorPki, cert_der


def issue_card(pki: OperatorPki, card_id: str, tier: int, balance_fen: int, caps: OfflineCaps | None = None,
               *, expired: bool = False, wallet_id: str | None = None, now: dt.datetime | None = None) -> CardState:
    """Create a card's state, its certificate issued at ``now`` (default: the clock). ``expired`` gives it a
    certificate that ended the day before (a tester's fault)."""
    if tier not in TIER_LIMITS:
        raise InvalidInput(f"tier must be one of {sorted(TIER_LIMITS)}, got {tier}")
    limits = TIER_LIMITS[tier]
    if balance_fen < 0:
        raise InvalidInput("balance must not be negative")
    if limits.balance_max is not None and balance_fen > limits.balance_max:
        raise InvalidInput(f"balance over the tier {tier} wallet cap of {limits.balance_max // 100} yuan")
    caps = caps or OfflineCaps()
    wallet_id = wallet_id or new_wallet_id()
    key = new_key()
    ca: CertificateAuthority = pki.wallet_ca
    if expired:
        now = now or clock.now()
        cert = ca.issue_wallet_cert(wallet_id, tier, key.public_key(), not_before=now - dt.timedelta(days=400),
                                    not_after=now - dt.timedelta(days=1))
    else:
        cert = ca.issue_wallet_cert(wallet_id, tier, key.public_key(),
                                    not_before=None if now is None else now - dt.timedelta(minutes=5))
    return CardState(
        card_id=card_id, wallet_id=wallet_id, tier=tier, key_pem=key_to_pem(key).decode(),
        cert_der=cert_der(cert), issuer_der=cert_der(ca.cert), balance_fen=balance_fen,
        single_max=limits.single_max, daily_max=limits.daily_max, balance_max=limits.balance_max,
        offline_single_max=caps.single_max, offline_cumulative_max=caps.cumulative_max,
        offline_count_max=caps.count_max,
    )
