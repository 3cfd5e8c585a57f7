"""Tickets sold online: sold from a wallet's online balance, refunded back to it before use, learnt by the spot's
gates at every sync, their used entries reported back.

Capacity: an online sale of a day goes through only while the tickets sold online (not refunded) plus the tickets
the spot's gates have reported selling themselves, plus this order, stay within the spot's daily capacity. What a
gate sold offline since its last sync is not known here, so a day can end over capacity by those sales; a gate
counts the online tickets it has learnt and refuses its own sales at capacity.

Each change of an order (sold, refunded, entries reported) gives it a new version, unique across orders; a gate asks
for the orders of its spot changed after the version it has, as it does for the denylist. Gates report the entries
on each order as running totals per gate; an order with more entries than tickets (used at two gates offline) is
flagged ``overused``, one used after its refund ``used_after_refund``: shown, not settled otherwise (the wallet is
not revoked: a visitor who walked out and in at another gate is not a clone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from bank import accounts, sql
from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.schema import ticket_days, ticket_gate_sales, ticket_orders, ticket_uses, wallets
from bank.store import Store
from wallet.card import china_day_text
from wire.errors import BadRequest, Conflict, Forbidden, NotFound
from wire.tickets import (
    GateTicket,
    TicketListAnswer,
    TicketLookupAnswer,
    TicketOrder,
    TicketSaleAnswer,
    TicketSyncAnswer,
    TicketUse,
)

MAX_DAYS_AHEAD = 90  # tickets are sold for today up to this many days ahead
PAGE = 2000  # orders in one sync answer (then ``more``)
LIST_MAX = 5000  # orders in one list answer


@dataclass(frozen=True)
class TicketSpot:
    """What a spot sells online: its tickets (sku: price in fen) and its daily capacity."""

    products: Mapping[str, int]
    daily_capacity: int


def spots_to_json(spots: Mapping[str, TicketSpot]) -> dict[str, Any]:
    """``ticket_spots`` as JSON (the settings file of ``pos operator serve --workers N``)."""
    return {mid: {"products": dict(s.products), "daily_capacity": s.daily_capacity} for mid, s in spots.items()}


def spots_from_json(data: Mapping[str, Any]) -> dict[str, TicketSpot]:
    """What :func:`spots_to_json` wrote."""
    return {mid: TicketSpot(dict(s["products"]), int(s["daily_capacity"])) for mid, s in data.items()}


def check_day(day: str) -> dt.date:
    """``day`` as a date; :class:`BadRequest` when it is not a real YYYY-MM-DD day."""
    try:
        return dt.date.fromisoformat(day)
    except ValueError:
        raise BadRequest(f"{day!r} is not a day (YYYY-MM-DD)", "bad_day") from None


def next_version(conn: Connection) -> int:
    """The next order version (a race with a concurrent writer is a unique-key clash: the transaction runs again)."""
    return int(conn.execute(select(func.max(ticket_orders.c.version))).scalar() or 0) + 1


def _order(row: Any) -> TicketOrder:
    return TicketOrder(order_id=row.order_id, merchant_id=row.merchant_id, wallet_id=row.wallet_id, sku=row.sku,
                       day=row.day, quantity=row.quantity, unit_fen=row.unit_fen, amount_fen=row.amount_fen,
                       status=row.status, used=row.used, flag=row.flag, created_ms=row.created_ms,
                       refunded_ms=row.refunded_ms)


def _gate_ticket(row: Any, used_here: int) -> GateTicket:
    return GateTicket(order_id=row.order_id, wallet_id=row.wallet_id, sku=row.sku, day=row.day,
                      quantity=row.quantity, status=row.status, used=row.used, used_here=used_here)


def _day_row(conn: Connection, merchant_id: str, day: str) -> Any:
    """The spot's day (opened with zero counts on first use)."""
    conn.execute(sql.insert_ignore(conn, ticket_days).values(merchant_id=merchant_id, day=day, online_sold=0,
                                                             gate_sold=0))
    return conn.execute(select(ticket_days).where(ticket_days.c.merchant_id == merchant_id,
                                                  ticket_days.c.day == day)).one()


def _online_fen(conn: Connection, wallet_id: str) -> int:
    return int(conn.execute(select(wallets.c.online_fen).where(wallets.c.wallet_id == wallet_id)).scalar() or 0)


class Tickets:
    """Online ticket sales of the spots in ``spots`` (merchant id: :class:`TicketSpot`)."""

    def __init__(self, store: Store, spots: Mapping[str, TicketSpot]) -> None:
        self.store = store
        self.spots = dict(spots)

    def spot(self, merchant_id: str) -> TicketSpot:
        spot = self.spots.get(merchant_id)
        if spot is None:
            raise NotFound(f"merchant {merchant_id} sells no tickets online", "unknown_spot")
        return spot

    # -- back office ------------------------------------------------------------------------------------------------
    def sell(self, order_id: str, merchant_id: str, wallet_id: str, sku: str, day: str,
             quantity: int) -> TicketSaleAnswer:
        """Sell ``quantity`` tickets for ``day`` from the wallet's online balance (once per ``order_id``)."""
        spot = self.spot(merchant_id)
        if sku not in spot.products:
            raise BadRequest(f"merchant {merchant_id} sells no {sku!r} ticket online; it sells "
                             f"{', '.join(sorted(spot.products))}", "unknown_product")
        if not 1 <= quantity <= 20:
            raise BadRequest("quantity must be between 1 and 20")
        visit = check_day(day)
        t = now_ms()
        today = dt.date.fromisoformat(china_day_text(t))
        if visit < today:
            raise BadRequest(f"{day} has passed (today is {today})", "bad_day")
        if visit > today + dt.timedelta(days=MAX_DAYS_AHEAD):
            raise BadRequest(f"tickets are sold at most {MAX_DAYS_AHEAD} days ahead", "bad_day")
        unit = spot.products[sku]
        amount = unit * quantity

        def run(conn: Connection) -> TicketSaleAnswer:
            prior = conn.execute(select(ticket_orders).where(ticket_orders.c.order_id == order_id)).first()
            if prior is not None:
                if (prior.merchant_id, prior.wallet_id, prior.sku, prior.day, prior.quantity) != (
                        merchant_id, wallet_id, sku, day, quantity):
                    raise Conflict(f"order {order_id} was already made for another request", "order_id_reused")
                return TicketSaleAnswer(order=_order(prior), online_fen=_online_fen(conn, wallet_id), replayed=True)
            w = conn.execute(select(wallets.c.status).where(wallets.c.wallet_id == wallet_id)).first()
            if w is None:
                raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
            if w.status != "active":
                raise Forbidden(f"wallet {wallet_id} is revoked", "wallet_revoked")
            left = self._places_left(conn, merchant_id, day, spot)
            taken = conn.execute(update(ticket_days).where(
                ticket_days.c.merchant_id == merchant_id, ticket_days.c.day == day,
                ticket_days.c.online_sold + ticket_days.c.gate_sold + quantity <= spot.daily_capacity).values(
                online_sold=ticket_days.c.online_sold + quantity)).rowcount
            if taken != 1:
                raise Conflict(f"{day} is sold out at merchant {merchant_id}" if left <= 0 else
                               f"only {left} place(s) left on {day} at merchant {merchant_id}", "sold_out")
            paid = conn.execute(update(wallets).where(
                wallets.c.wallet_id == wallet_id, wallets.c.status == "active",
                wallets.c.online_fen >= amount).values(online_fen=wallets.c.online_fen - amount)).rowcount
            if paid != 1:
                raise Conflict(f"the online balance of wallet {wallet_id} ({_yuan(_online_fen(conn, wallet_id))}) "
                               f"is less than {_yuan(amount)}", "insufficient_online_balance")
            accounts.credit(conn, merchant_id, amount, 0)
            conn.execute(ticket_orders.insert().values(
                order_id=order_id, merchant_id=merchant_id, wallet_id=wallet_id, sku=sku, day=day,
                quantity=quantity, unit_fen=unit, amount_fen=amount, status="sold", used=0, flag=None,
                version=next_version(conn), created_ms=t, refunded_ms=None))
            row = conn.execute(select(ticket_orders).where(ticket_orders.c.order_id == order_id)).one()
            return TicketSaleAnswer(order=_order(row), online_fen=_online_fen(conn, wallet_id), replayed=False)

        return self.store.write(run)

    def _places_left(self, conn: Connection, merchant_id: str, day: str, spot: TicketSpot) -> int:
        d = _day_row(conn, merchant_id, day)
        return spot.daily_capacity - d.online_sold - d.gate_sold

    def refund(self, order_id: str) -> TicketSaleAnswer:
        """Refund an unused order to the wallet's online balance (again: the same answer, ``replayed``)."""

        def run(conn: Connection) -> TicketSaleAnswer:
            row = conn.execute(select(ticket_orders).where(ticket_orders.c.order_id == order_id)).first()
            if row is None:
                raise NotFound(f"no ticket order {order_id}", "unknown_order")
            if row.status == "refunded":
                return TicketSaleAnswer(order=_order(row), online_fen=_online_fen(conn, row.wallet_id),
                                        replayed=True)
            if row.used > 0:
                raise Conflict(f"order {order_id} was used at the gate ({row.used} of {row.quantity}): no refund "
                               "after use", "ticket_used")
            t = now_ms()
            done = conn.execute(update(ticket_orders).where(
                ticket_orders.c.order_id == order_id, ticket_orders.c.status == "sold",
                ticket_orders.c.used == 0).values(status="refunded", refunded_ms=t,
                                                  version=next_version(conn))).rowcount
            if done != 1:
                raise Conflict(f"order {order_id} changed meanwhile", "ticket_used")
            _day_row(conn, row.merchant_id, row.day)
            conn.execute(update(ticket_days).where(ticket_days.c.merchant_id == row.merchant_id,
                                                   ticket_days.c.day == row.day)
                         .values(online_sold=ticket_days.c.online_sold - row.quantity))
            conn.execute(update(wallets).where(wallets.c.wallet_id == row.wallet_id)
                         .values(online_fen=wallets.c.online_fen + row.amount_fen))
            accounts.credit(conn, row.merchant_id, 0, 0, refunded=row.amount_fen)
            new = conn.execute(select(ticket_orders).where(ticket_orders.c.order_id == order_id)).one()
            return TicketSaleAnswer(order=_order(new), online_fen=_online_fen(conn, row.wallet_id), replayed=False)

        return self.store.write(run)

    def find(self, wallet_id: str | None = None, day: str | None = None,
             merchant_id: str | None = None, flagged: bool = False) -> TicketListAnswer:
        """Orders, oldest first, filtered by wallet, visit day, spot and flag."""
        if day is not None:
            check_day(day)
        q = select(ticket_orders)
        if wallet_id is not None:
            q = q.where(ticket_orders.c.wallet_id == wallet_id)
        if day is not None:
            q = q.where(ticket_orders.c.day == day)
        if merchant_id is not None:
            q = q.where(ticket_orders.c.merchant_id == merchant_id)
        if flagged:
            q = q.where(ticket_orders.c.flag.is_not(None))
        rows = self.store.read(lambda conn: conn.execute(
            q.order_by(ticket_orders.c.created_ms, ticket_orders.c.order_id).limit(LIST_MAX)).all())
        return TicketListAnswer(orders=[_order(r) for r in rows])

    # -- gates ------------------------------------------------------------------------------------------------------
    def gate_sync(self, terminal: TerminalRecord, since: int, day: str, gate_sold: int,
                  uses: Sequence[TicketUse]) -> TicketSyncAnswer:
        """A gate's sync: record its used entries and its own sales of ``day``, answer the spot's orders for
        ``day`` and later changed after ``since`` (at most :data:`PAGE`; ``more`` when others wait)."""
        spot = self.spot(terminal.merchant_id)
        check_day(day)
        tid, mid = terminal.terminal_id, terminal.merchant_id

        def run(conn: Connection) -> TicketSyncAnswer:
            self._record_uses(conn, tid, mid, uses)
            self._record_gate_sales(conn, tid, mid, day, gate_sold)
            rows = conn.execute(select(ticket_orders).where(
                ticket_orders.c.merchant_id == mid, ticket_orders.c.version > since, ticket_orders.c.day >= day)
                .order_by(ticket_orders.c.version).limit(PAGE + 1)).all()
            more = len(rows) > PAGE
            rows = rows[:PAGE]
            here = self._used_here(conn, tid, [r.order_id for r in rows])
            d = _day_row(conn, mid, day)
            mine = conn.execute(select(ticket_gate_sales.c.sold).where(
                ticket_gate_sales.c.terminal_id == tid, ticket_gate_sales.c.day == day)).scalar() or 0
            return TicketSyncAnswer(version=max([since, *(r.version for r in rows)]), since=since, day=day,
                                    orders=[_gate_ticket(r, here.get(r.order_id, 0)) for r in rows], more=more,
                                    others_sold=max(0, d.gate_sold - mine), online_sold=d.online_sold,
                                    capacity=spot.daily_capacity)

        return self.store.write(run)

    def lookup(self, terminal: TerminalRecord, wallet_id: str, day: str) -> TicketLookupAnswer:
        """The wallet's orders at the gate's spot for ``day`` (a gate asks for one it has not heard of)."""
        self.spot(terminal.merchant_id)
        check_day(day)

        def run(conn: Connection) -> TicketLookupAnswer:
            rows = conn.execute(select(ticket_orders).where(
                ticket_orders.c.merchant_id == terminal.merchant_id, ticket_orders.c.wallet_id == wallet_id,
                ticket_orders.c.day == day).order_by(ticket_orders.c.version)).all()
            here = self._used_here(conn, terminal.terminal_id, [r.order_id for r in rows])
            return TicketLookupAnswer(orders=[_gate_ticket(r, here.get(r.order_id, 0)) for r in rows])

        return self.store.read(run)

    @staticmethod
    def _used_here(conn: Connection, terminal_id: str, order_ids: list[str]) -> dict[str, int]:
        if not order_ids:
            return {}
        return {r.order_id: r.used for r in conn.execute(select(ticket_uses.c.order_id, ticket_uses.c.used).where(
            ticket_uses.c.terminal_id == terminal_id, ticket_uses.c.order_id.in_(order_ids))).all()}

    @staticmethod
    def _record_uses(conn: Connection, terminal_id: str, merchant_id: str, uses: Sequence[TicketUse]) -> None:
        """Entries per order at this gate, as running totals (a lower total than on file changes nothing); an order
        whose entries at all gates exceed its tickets is flagged ``overused``, one used after its refund
        ``used_after_refund``."""
        if not uses:
            return
        latest: dict[str, int] = {}
        for u in uses:
            latest[u.order_id] = max(u.used, latest.get(u.order_id, 0))
        orders = {r.order_id: r for r in conn.execute(select(ticket_orders).where(
            ticket_orders.c.order_id.in_(list(latest)))).all()}
        for oid in latest:
            if oid not in orders or orders[oid].merchant_id != merchant_id:
                raise Forbidden(f"order {oid} is not a ticket of this gate's spot", "not_your_ticket")
        on_file = Tickets._used_here(conn, terminal_id, list(latest))
        t = now_ms()
        version = next_version(conn)
        for oid, used in sorted(latest.items()):
            before = on_file.get(oid)
            if before is not None and used <= before:
                continue
            if before is None:
                conn.execute(ticket_uses.insert().values(order_id=oid, terminal_id=terminal_id, used=used,
                                                         updated_ms=t))
            else:
                conn.execute(update(ticket_uses).where(and_(ticket_uses.c.order_id == oid,
                                                            ticket_uses.c.terminal_id == terminal_id))
                             .values(used=used, updated_ms=t))
            total = int(conn.execute(select(func.sum(ticket_uses.c.used)).where(
                ticket_uses.c.order_id == oid)).scalar() or 0)
            row = orders[oid]
            flag = row.flag
            if row.status == "refunded" and total > 0:
                flag = "used_after_refund"
            elif total > row.quantity:
                flag = "overused"
            conn.execute(update(ticket_orders).where(ticket_orders.c.order_id == oid)
                         .values(used=total, flag=flag, version=version))
            version += 1

    @staticmethod
    def _record_gate_sales(conn: Connection, terminal_id: str, merchant_id: str, day: str, sold: int) -> None:
        """The gate's own sales of ``day`` (a running total: a lower one than on file changes nothing)."""
        _day_row(conn, merchant_id, day)
        before = conn.execute(select(ticket_gate_sales.c.sold).where(
            ticket_gate_sales.c.terminal_id == terminal_id, ticket_gate_sales.c.day == day)).scalar()
        if before is None:
            conn.execute(ticket_gate_sales.insert().values(terminal_id=terminal_id, day=day, merchant_id=merchant_id,
                                                           sold=sold))
            delta = sold
        elif sold > before:
            conn.execute(update(ticket_gate_sales).where(ticket_gate_sales.c.terminal_id == terminal_id,
                                                         ticket_gate_sales.c.day == day).values(sold=sold))
            delta = sold - before
        else:
            return
        if delta:
            conn.execute(update(ticket_days).where(ticket_days.c.merchant_id == merchant_id,
                                                   ticket_days.c.day == day)
                         .values(gate_sold=ticket_days.c.gate_sold + delta))


def _yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"
