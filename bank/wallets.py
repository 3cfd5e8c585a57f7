"""Wallets on file and their loads: registration with the opening balance, signed load tokens."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from bank.clock import now_ms
from bank.schema import load_tokens, read_only, wallets
from bank.store import Store
from wallet import clock
from wallet.certs import OperatorPki, cert_der, verify_wallet_certificate
from wallet.errors import CertificateError, InvalidInput
from wallet.ids import check_wallet_id
from wallet.limits import TIER_LIMITS
from wallet.protocol import LoadToken
from wire.errors import BadRequest, Conflict, Forbidden, NotFound
from wire.models import WalletAnswer, WalletRegistered


class Wallets:
    """Registration, load tokens and look-ups of the wallets the operator's CA issued."""

    def __init__(self, store: Store, pki: OperatorPki) -> None:
        self.store = store
        self.pki = pki
        self.roots = (cert_der(pki.root.cert),)

    def register(self, wallet_id: str, tier: int, certificate: bytes, opening_fen: int) -> WalletRegistered:
        """Put a newly issued wallet on file with its opening balance (idempotent for the same certificate)."""
        try:
            check_wallet_id(wallet_id)
            info = verify_wallet_certificate(certificate, (cert_der(self.pki.wallet_ca.cert),), self.roots,
                                             clock.now())
        except (InvalidInput, CertificateError) as exc:
            raise BadRequest(str(exc), "bad_wallet") from None
        if info.wallet_id != wallet_id or info.tier != tier:
            raise BadRequest("the certificate names another wallet or tier", "bad_wallet")
        if opening_fen < 0:
            raise BadRequest("opening balance must not be negative")

        def run(conn: Connection) -> None:
            row = conn.execute(select(wallets.c.cert_der, wallets.c.loaded_fen)
                               .where(wallets.c.wallet_id == wallet_id)).first()
            if row is None:
                conn.execute(insert(wallets).values(
                    wallet_id=wallet_id, tier=tier, cert_der=certificate, loaded_fen=opening_fen, spent_fen=0,
                    online_fen=0, load_counter=0, status="active", created_ms=now_ms()))
            elif row.cert_der != certificate:
                raise Conflict(f"wallet {wallet_id} is registered with another certificate", "wallet_exists")

        self.store.write(run)
        return WalletRegistered(wallet_id=wallet_id, tier=tier, status="registered")

    def issue_load_token(self, wallet_id: str, amount_fen: int, after_counter: int = 0) -> LoadToken:
        """A signed load token numbered past both the operator's and the card's last load counter."""
        if amount_fen <= 0:
            raise BadRequest("load amount must be positive")

        def run(conn: Connection) -> LoadToken:
            row = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
            if row is None:
                raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
            if row.status != "active":
                raise Forbidden(f"wallet {wallet_id} is revoked", "wallet_revoked")
            limit = TIER_LIMITS[row.tier].balance_max
            if limit is not None and amount_fen > limit:
                raise BadRequest("load over the wallet balance cap", "over_balance_limit")
            counter = max(row.load_counter, after_counter) + 1
            conn.execute(update(wallets).where(wallets.c.wallet_id == wallet_id).values(
                load_counter=counter,
                loaded_fen=None if row.loaded_fen is None else wallets.c.loaded_fen + amount_fen))
            t = now_ms()
            conn.execute(insert(load_tokens).values(wallet_id=wallet_id, load_counter=counter, amount_fen=amount_fen,
                                                    created_ms=t))
            return LoadToken(wallet_id, counter, amount_fen, t).signed(self.pki.wallet_ca.key)

        return self.store.write(run)

    def get(self, wallet_id: str) -> WalletAnswer:
        with read_only(self.store.engine) as conn:
            row = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
        if row is None:
            raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
        return WalletAnswer(wallet_id=row.wallet_id, tier=row.tier, status=row.status, loaded_fen=row.loaded_fen,
                            spent_fen=row.spent_fen, online_fen=row.online_fen, load_counter=row.load_counter,
                            revoked_reason=row.revoked_reason)
