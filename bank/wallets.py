"""Wallets on file and their loads: registration with the opening balance, signed load tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, insert, select, update

from bank import redpackets
from bank.clock import now_ms
from bank.schema import load_tokens, read_only, wallets
from bank.sql import IN_CHUNK
from bank.store import Store
from wallet import clock
from wallet.certs import verify_wallet_certificate
from wallet.errors import CertificateError, InvalidInput
from wallet.ids import check_wallet_id
from wallet.limits import TIER_LIMITS
from wallet.pki import OperatorPki, cert_der
from wallet.protocol import LoadToken
from wire.errors import BadRequest, Conflict, Forbidden, NotFound, WalletExists
from wire.models import LoadAnswer, WalletAnswer, WalletRegistered


class Wallets:
    """Registration, load tokens and look-ups of the wallets the operator's CA issued."""

    def __init__(self, store: Store, pki: OperatorPki) -> None:
        self.store = store
        self.pki = pki
        self.roots = (cert_der(pki.root.cert),)

    def register(self, wallet_id: str, tier: int, certificate: bytes, opening_fen: int) -> WalletRegistered:
        """Put a newly issued wallet on file with its opening balance (idempotent for the same certificate). The
        operator is the authority on wallet ids: an id on file with another certificate is refused
        (:class:`~wire.errors.WalletExists`, 409 ``wallet_exists``) and the wallet on file stays as it is; two
        registrations of one id racing leave one on file (the wallets table's primary key, the transaction re-run
        after the race)."""
        self.register_many([(wallet_id, tier, certificate, opening_fen)])
        return WalletRegistered(wallet_id=wallet_id, tier=tier, status="registered")

    def register_many(self, batch: Sequence[tuple[str, int, bytes, int]]) -> None:
        """Put newly issued wallets ``(wallet id, tier, certificate, opening fen)`` on file in one transaction, all
        or none: an issuer's import of a batch of cards, with the checks of :meth:`register` for each. A refusal
        names every wallet id of the batch on file with another certificate (``WalletExists.wallet_ids``)."""
        for wallet_id, tier, certificate, opening_fen in batch:
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
            ids = [b[0] for b in batch]
            on_file: dict[str, bytes | None] = {}
            for i in range(0, len(ids), IN_CHUNK):
                rows = conn.execute(select(wallets.c.wallet_id, wallets.c.cert_der)
                                    .where(wallets.c.wallet_id.in_(ids[i:i + IN_CHUNK])))
                on_file.update((r[0], r[1]) for r in rows)
            new = []
            taken: list[str] = []
            t = now_ms()
            for wallet_id, tier, certificate, opening_fen in batch:
                if wallet_id not in on_file:
                    on_file[wallet_id] = certificate
                    new.append({"wallet_id": wallet_id, "tier": tier, "cert_der": certificate,
                                "loaded_fen": opening_fen, "spent_fen": 0, "online_fen": 0, "load_counter": 0,
                                "status": "active", "created_ms": t})
                elif on_file[wallet_id] != certificate:
                    taken.append(wallet_id)
            if taken:
                more = f" (and {len(taken) - 1} more of the batch)" if len(taken) > 1 else ""
                raise WalletExists(f"wallet {taken[0]} is registered with another certificate{more}", taken)
            if new:
                conn.execute(insert(wallets), new)

        self.store.write(run)

    def issue_load_token(self, wallet_id: str, amount_fen: int, after_counter: int = 0) -> LoadToken:
        """A signed load token numbered past both the operator's and the card's last load counter. It is on file as
        issued: it counts as loaded only once confirmed (:meth:`confirm_load`, or proven by a later voucher). The
        wallet's waiting red packets that fit under its balance cap ride on it (:func:`bank.redpackets.attach`): its
        amount is ``amount_fen`` plus theirs."""
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
            conn.execute(update(wallets).where(wallets.c.wallet_id == wallet_id).values(load_counter=counter))
            t = now_ms()
            total = amount_fen + redpackets.attach(conn, row, counter, amount_fen, t)  # red packets ride along
            conn.execute(insert(load_tokens).values(wallet_id=wallet_id, load_counter=counter, amount_fen=total,
                                                    created_ms=t, status="issued"))
            return LoadToken(wallet_id, counter, total, t).signed(self.pki.wallet_ca.key)

        return self.store.write(run)

    def confirm_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        """The card took the load: it counts in the wallet's loaded total from now on (once; idempotent)."""
        return self.store.write(lambda conn: settle_load(conn, wallet_id, load_counter, "confirmed"))

    def cancel_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        """The card refused the load: it never counts (idempotent; :class:`Conflict` once it was confirmed)."""
        return self.store.write(lambda conn: settle_load(conn, wallet_id, load_counter, "cancelled"))

    def get(self, wallet_id: str) -> WalletAnswer:
        with read_only(self.store.engine) as conn:
            row = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
        if row is None:
            raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
        return WalletAnswer(wallet_id=row.wallet_id, tier=row.tier, status=row.status, loaded_fen=row.loaded_fen,
                            spent_fen=row.spent_fen, online_fen=row.online_fen, load_counter=row.load_counter,
                            revoked_reason=row.revoked_reason)

    def spent(self, wallet_ids: Sequence[str]) -> dict[str, int]:
        """What each wallet on file has spent (settled offline), by wallet id, in one read: a back office's bulk
        look-up (the fleet simulator's books). Wallets not on file are left out."""
        out: dict[str, int] = {}
        with read_only(self.store.engine) as conn:
            for i in range(0, len(wallet_ids), IN_CHUNK):
                rows = conn.execute(select(wallets.c.wallet_id, wallets.c.spent_fen)
                                    .where(wallets.c.wallet_id.in_(wallet_ids[i:i + IN_CHUNK])))
                out.update((r[0], int(r[1])) for r in rows)
        return out


def settle_load(conn: Connection, wallet_id: str, load_counter: int, status: str) -> LoadAnswer:
    """Mark an issued load token ``confirmed`` (adding it to the wallet's loaded total) or ``cancelled``, in the
    caller's transaction. The same answer again when it already is; :class:`Conflict` for the other way round."""
    row = conn.execute(select(load_tokens).where(load_tokens.c.wallet_id == wallet_id,
                                                 load_tokens.c.load_counter == load_counter)).first()
    if row is None:
        raise NotFound(f"no load {load_counter} issued for wallet {wallet_id}", "unknown_load")
    if row.status != status:
        if row.status != "issued":
            raise Conflict(f"load {load_counter} of wallet {wallet_id} is already {row.status}", "load_settled")
        changed = conn.execute(update(load_tokens).where(
            load_tokens.c.wallet_id == wallet_id, load_tokens.c.load_counter == load_counter,
            load_tokens.c.status == "issued").values(status=status)).rowcount
        if changed != 1:
            raise Conflict(f"load {load_counter} of wallet {wallet_id} changed meanwhile", "load_settled")
        if status == "confirmed":
            conn.execute(update(wallets).where(wallets.c.wallet_id == wallet_id, wallets.c.loaded_fen.is_not(None))
                         .values(loaded_fen=wallets.c.loaded_fen + row.amount_fen))
    return LoadAnswer(wallet_id=wallet_id, load_counter=load_counter, amount_fen=row.amount_fen, status=status)
