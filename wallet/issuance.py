"""Issuing a card: a fresh key, a wallet id, a certificate from the operator's wallet CA, limits from the tier; and
registering what was issued, issuing again under a fresh id a card whose wallet id the operator has on file.

Wallet ids are random draws (:func:`wallet.ids.new_wallet_id`), and the operator is the authority on them: it
refuses to register an id it has on file with another certificate (:class:`~wallet.errors.WalletIdTaken`).
:func:`register_issued` then issues that card again (a fresh wallet id, key and certificate) and registers it,
up to :data:`ISSUE_ATTEMPTS` draws, so an issuer never hands out a card whose wallet is someone else's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from wallet import clock
from wallet.card import CardState
from wallet.errors import InvalidInput, WalletIdsExhausted, WalletIdTaken
from wallet.ids import new_wallet_id
from wallet.keys import key_to_pem, new_key
from wallet.limits import TIER_LIMITS, OfflineCaps
from wallet.pki import CertificateAuthority, OperatorPki, cert_der

ISSUE_ATTEMPTS = 5  # draws of a wallet id per card: each is on file already with odds (wallets on file) / 10^11


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


def register_issued(states: Sequence[CardState], register: Callable[[list[CardState]], object],
                    reissue: Callable[[CardState], CardState], attempts: int = ISSUE_ATTEMPTS) -> list[CardState]:
    """Register freshly issued cards' wallets: ``register(batch)``, which raises :class:`WalletIdTaken` naming the
    ids the operator has on file with another certificate (registering the others, or none). Each card refused, and
    each card of the batch whose id another card of the batch drew first, is issued again (``reissue(state)``: the
    same card under a fresh wallet id, key and certificate) and the batch registered again (the cards already on file
    again with the same certificates: nothing changes). Returns the states as registered, in order; raises
    :class:`WalletIdsExhausted` when ids are still taken after ``attempts`` draws."""
    batch = list(states)
    again: set[int] = set()
    for attempt in range(1, attempts + 1):
        first: dict[str, int] = {}
        again = {i for i, s in enumerate(batch) if first.setdefault(s.wallet_id, i) != i}
        if not again:
            try:
                register(batch)
                return batch
            except WalletIdTaken as exc:
                if not exc.wallet_ids:
                    raise
                again = {i for i, s in enumerate(batch) if s.wallet_id in exc.wallet_ids}
        if attempt < attempts:
            batch = [reissue(s) if i in again else s for i, s in enumerate(batch)]
    ids = sorted({batch[i].wallet_id for i in again})
    raise WalletIdsExhausted(f"the wallet ids drawn for a card were on file at the operator already {attempts} times "
                             f"in a row (last {', '.join(ids)})")
