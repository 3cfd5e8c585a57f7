"""Red packets (数字人民币红包): amounts granted to wallets, received at the wallet's next load.

A grant puts one packet per wallet on file, waiting. When the back office issues the wallet's next load token
(bank/wallets.py), the waiting packets that fit under the tier's balance cap ride on it: the token's amount is the
load asked for plus those packets. What fits is judged on what the operator knows of the card's balance: its opening
balance and confirmed loads, plus load tokens issued and not yet confirmed, minus its settled spending (a payment not
settled yet still counts as balance). A packet that does not fit stays waiting for a later load; the card's own cap
check is therefore never what refuses a load because of a packet. A packet larger than the tier's cap on its own is
refused at the grant.

A packet's state follows its load token: ``on_load`` while the token is issued, ``received`` once it is confirmed
(the card took it, or a later voucher proves it), ``waiting`` again when the token is cancelled (the card refused
it). A packet still waiting after its ``expires`` day (China Standard Time) is ``returned``: it goes back to its
funder (the operator, or the merchant that funded it) and no load carries it any more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from bank.clock import now_ms
from bank.schema import load_tokens, red_packets, wallets
from bank.store import Store
from bank.tickets import check_day
from wallet.card import china_day_text
from wallet.limits import TIER_LIMITS
from wire.errors import BadRequest, Conflict, Forbidden, NotFound
from wire.tickets import RedPacket, RedPacketGrantAnswer, RedPacketListAnswer


def _query() -> Any:
    """Packets with the status of the load token carrying each (NULL: none)."""
    return select(red_packets, load_tokens.c.status.label("token_status")).select_from(red_packets.outerjoin(
        load_tokens, and_(load_tokens.c.wallet_id == red_packets.c.wallet_id,
                          load_tokens.c.load_counter == red_packets.c.load_counter)))


def status(row: Any, today: str) -> str:
    """waiting | on_load | received | returned (see the module's docstring)."""
    carried = row.token_status  # the state of the load token carrying it, if any
    if carried == "confirmed":
        return "received"
    if carried == "issued":
        return "on_load"
    return "returned" if row.expires < today else "waiting"


def _packet(row: Any, today: str) -> RedPacket:
    return RedPacket(packet_id=row.packet_id, grant_id=row.grant_id, wallet_id=row.wallet_id,
                     amount_fen=row.amount_fen, funder=row.funder, expires=row.expires, status=status(row, today),
                     load_counter=None if row.token_status in (None, "cancelled") else row.load_counter,
                     created_ms=row.created_ms)


class RedPackets:
    """Grants and look-ups; ``funders`` are the merchant ids that may fund a grant (besides the operator)."""

    def __init__(self, store: Store, funders: Collection[str] = ()) -> None:
        self.store = store
        self.funders = frozenset(funders)

    def grant(self, grant_id: str, wallet_ids: Sequence[str], amount_fen: int, expires: str,
              funder: str = "operator") -> RedPacketGrantAnswer:
        """One packet of ``amount_fen`` for each wallet, receivable up to ``expires`` (once per ``grant_id``)."""
        if amount_fen <= 0:
            raise BadRequest("the amount must be positive")
        if len(set(wallet_ids)) != len(wallet_ids) or not wallet_ids:
            raise BadRequest("name each wallet once")
        if funder != "operator" and funder not in self.funders:
            raise BadRequest(f"funder {funder!r} is neither the operator nor a merchant on file", "unknown_funder")
        check_day(expires)
        t = now_ms()
        today = china_day_text(t)
        if expires < today:
            raise BadRequest(f"expiry {expires} has passed (today is {today})", "bad_day")

        def run(conn: Connection) -> RedPacketGrantAnswer:
            prior = conn.execute(_query().where(red_packets.c.grant_id == grant_id)
                                 .order_by(red_packets.c.packet_id)).all()
            if prior:
                if (sorted(r.wallet_id for r in prior) != sorted(wallet_ids) or
                        {(r.amount_fen, r.expires, r.funder) for r in prior} != {(amount_fen, expires, funder)}):
                    raise Conflict(f"grant {grant_id} was already made for another request", "grant_id_reused")
                return RedPacketGrantAnswer(grant_id=grant_id, packets=[_packet(r, today) for r in prior],
                                            replayed=True)
            rows = {r.wallet_id: r for r in conn.execute(select(wallets.c.wallet_id, wallets.c.tier, wallets.c.status)
                                                         .where(wallets.c.wallet_id.in_(list(wallet_ids)))).all()}
            for n, wid in enumerate(wallet_ids, 1):
                w = rows.get(wid)
                if w is None:
                    raise NotFound(f"wallet {wid} is not registered", "unknown_wallet")
                if w.status != "active":
                    raise Forbidden(f"wallet {wid} is revoked", "wallet_revoked")
                cap = TIER_LIMITS[w.tier].balance_max
                if cap is not None and amount_fen > cap:
                    raise BadRequest(f"a red packet of ¥{amount_fen // 100}.{amount_fen % 100:02d} is over the tier "
                                     f"{w.tier} wallet cap: wallet {wid} could never receive it",
                                     "over_balance_limit")
                conn.execute(red_packets.insert().values(
                    packet_id=f"{grant_id}-{n:04d}", grant_id=grant_id, wallet_id=wid, amount_fen=amount_fen,
                    funder=funder, expires=expires, load_counter=None, created_ms=t))
            made = conn.execute(_query().where(red_packets.c.grant_id == grant_id)
                                .order_by(red_packets.c.packet_id)).all()
            return RedPacketGrantAnswer(grant_id=grant_id, packets=[_packet(r, today) for r in made], replayed=False)

        return self.store.write(run)

    def of_wallet(self, wallet_id: str) -> RedPacketListAnswer:
        """The wallet's packets, oldest first, with their states now."""
        today = china_day_text(now_ms())
        rows = self.store.read(lambda conn: conn.execute(_query().where(red_packets.c.wallet_id == wallet_id)
                                                         .order_by(red_packets.c.created_ms,
                                                                   red_packets.c.packet_id)).all())
        return RedPacketListAnswer(packets=[_packet(r, today) for r in rows])


def attach(conn: Connection, wallet: Any, load_counter: int, amount_fen: int, t: int) -> int:
    """Put the wallet's waiting packets that fit under its balance cap on load ``load_counter`` (in the caller's
    transaction, before that token is on file); returns their total, to add to the token's amount. ``wallet`` is the
    wallet's row."""
    today = china_day_text(t)
    waiting = [r for r in conn.execute(_query().where(red_packets.c.wallet_id == wallet.wallet_id,
                                                      red_packets.c.expires >= today,
                                                      or_(red_packets.c.load_counter.is_(None),
                                                          load_tokens.c.status == "cancelled"))
                                       .order_by(red_packets.c.created_ms, red_packets.c.packet_id)).all()]
    if not waiting or wallet.loaded_fen is None:
        return 0  # nothing waits, or the operator never knew the card's balance: nothing can be shown to fit
    cap = TIER_LIMITS[wallet.tier].balance_max
    room: int | None = None
    if cap is not None:
        issued = int(conn.execute(select(func.sum(load_tokens.c.amount_fen)).where(
            load_tokens.c.wallet_id == wallet.wallet_id, load_tokens.c.status == "issued")).scalar() or 0)
        room = cap - (wallet.loaded_fen + issued - wallet.spent_fen) - amount_fen
    total = 0
    for r in waiting:
        if room is not None and total + r.amount_fen > room:
            continue  # does not fit now: stays waiting (a smaller one after it may fit)
        conn.execute(update(red_packets).where(red_packets.c.packet_id == r.packet_id)
                     .values(load_counter=load_counter))
        total += r.amount_fen
    return total
