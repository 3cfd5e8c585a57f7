"""The wallet's online balance (the soft wallet behind the hardware purse): top-ups by the back office, once per
credit id. Refunds (bank/refunds.py) and ticket refunds (bank/tickets.py) credit it too; online ticket sales debit it.

The tier's wallet balance cap holds for the online balance on its own: a top-up that would take it over the cap is
refused (``over_balance_limit``); refunds give back money the wallet had and are not capped.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from bank.clock import now_ms
from bank.schema import online_credits, wallets
from bank.store import Store
from wallet.limits import TIER_LIMITS
from wire.errors import BadRequest, Conflict, Forbidden, NotFound
from wire.tickets import OnlineBalanceAnswer


def credit(store: Store, credit_id: str, wallet_id: str, amount_fen: int) -> OnlineBalanceAnswer:
    """Add ``amount_fen`` to the wallet's online balance, once per ``credit_id`` (a repeat answers ``replayed``)."""
    if amount_fen <= 0:
        raise BadRequest("the amount must be positive")

    def run(conn: Connection) -> OnlineBalanceAnswer:
        prior = conn.execute(select(online_credits).where(online_credits.c.credit_id == credit_id)).first()
        w = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
        if prior is not None:
            if (prior.wallet_id, prior.amount_fen) != (wallet_id, amount_fen):
                raise Conflict(f"credit {credit_id} was already made for another request", "credit_id_reused")
            return OnlineBalanceAnswer(wallet_id=wallet_id, credit_id=credit_id, amount_fen=amount_fen,
                                       online_fen=w.online_fen if w is not None else 0, replayed=True)
        if w is None:
            raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
        if w.status != "active":
            raise Forbidden(f"wallet {wallet_id} is revoked", "wallet_revoked")
        cap = TIER_LIMITS[w.tier].balance_max
        q = update(wallets).where(wallets.c.wallet_id == wallet_id)
        if cap is not None:  # conditional: two credits racing cannot pass the cap together
            q = q.where(wallets.c.online_fen + amount_fen <= cap)
        if conn.execute(q.values(online_fen=wallets.c.online_fen + amount_fen)).rowcount != 1:
            raise BadRequest(f"the online balance would go over the tier {w.tier} wallet cap "
                             f"(¥{(cap or 0) // 100:,}.{(cap or 0) % 100:02d})", "over_balance_limit")
        conn.execute(online_credits.insert().values(credit_id=credit_id, wallet_id=wallet_id, amount_fen=amount_fen,
                                                    created_ms=now_ms()))
        after = conn.execute(select(wallets.c.online_fen).where(wallets.c.wallet_id == wallet_id)).scalar_one()
        return OnlineBalanceAnswer(wallet_id=wallet_id, credit_id=credit_id, amount_fen=amount_fen,
                                   online_fen=after, replayed=False)

    return store.write(run)
