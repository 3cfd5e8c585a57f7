"""Tickets sold online, at the gate (docs/tickets.md): learnt at every sync, asked for while online, admitted on a
proof of the wallet's key, their entries reported back.

A gate of a spot that sells online (merchants.yaml ``gate.online_tickets``) keeps the spot's orders in ``gate.db``.
Every sync (:func:`sync_gate`, called by :func:`pos.sync.upload.sync_once`) reports the entries used here on each
order and the tickets this gate sold itself today (running totals), and learns the orders changed since its version,
as it does for the denylist, with what the spot's other gates reported. A tap by a wallet with no ticket left here
today makes the gate ask the operator for one it has not heard of (:meth:`OnlineTickets.prepare`, a signed look-up,
one attempt with a short timeout; after a failure it does not ask again for 30 s).

An order becomes a pass (``online:ORDER``, see :mod:`pos.gate.store`) at the wallet's first tap: its tickets less the
entries other gates reported, so re-entries, anti-passback and the proof of the key (AUTHENTICATE) are those of a
gate sale, and nothing is charged. When the operator cannot be reached and the wallet has no ticket here, the gate
cannot know of a ticket bought after its last sync: it stops the visitor and says so (:meth:`OnlineTickets.unseen`),
and the same wallet's next tap within :data:`OFFER_S` seconds buys at the gate as usual.

Capacity at the gate counts the day's online tickets (not refunded) and what the other gates reported, besides its own
sales. What other gates sold offline since they last synced is not known here (nor at the operator).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pos.config import GateSettings
from pos.gate.store import ONLINE, GateStore
from pos.home import Home
from pos.sync.client import OperatorClient, OperatorRefused, OperatorUnavailable, RetryPolicy
from wallet.card import china_day
from wallet.clock import now_ms
from wallet.errors import InvalidInput
from wire.tickets import MAX_USES, GateTicket, TicketLookupAnswer, TicketSyncAnswer

OFFER_S = 120  # after a stop for an unseen ticket, the same wallet's next tap within this buys at the gate
LOOKUP_TIMEOUT_S = 1.5  # one look-up of a wallet's tickets while the visitor waits
OFFLINE_PAUSE_S = 30.0  # after a failed look-up, taps meanwhile count as offline without asking again
VERSION = "online_version"  # the version of the last ticket sync recorded
SYNCED_MS = "online_synced_ms"  # when the gate last learnt the orders (its own clock)
OTHERS = "others_sold:"  # + day: tickets the spot's other gates reported selling that day


def day_number(day: str) -> int:
    """``2026-05-01`` as the gate's day number ``20260501``."""
    return int(day.replace("-", ""))


def day_text(day: int) -> str:
    """The gate's day number ``20260501`` as ``2026-05-01``."""
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


def online_gate(home: Home, terminal_id: str) -> bool:
    """Whether ``terminal_id`` is a gate of a spot that sells tickets online."""
    merchant, terminal = home.terminal(terminal_id)
    return terminal.kind == "gate" and merchant.gate is not None and merchant.gate.online_tickets


def learn(store: GateStore, orders: list[GateTicket]) -> None:
    """Record orders as the operator answers them; the pass of an order already entered on here gets the entries
    left to it (less what other gates used; none once refunded)."""
    if not orders:
        return
    with store.transaction():  # one durable write for the lot
        for o in orders:
            elsewhere = max(0, o.used - o.used_here)
            store.conn.execute(
                "INSERT INTO online_orders (order_id, wallet_id, sku, day, quantity, status, used_elsewhere) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(order_id) DO UPDATE SET status = excluded.status, "
                "used_elsewhere = excluded.used_elsewhere",
                (o.order_id, o.wallet_id, o.sku, day_number(o.day), o.quantity, o.status, elsewhere))
            store.conn.execute("UPDATE passes SET tickets = MAX(used, ?) WHERE voucher_id = ?",
                               (o.quantity - elsewhere if o.status == "sold" else 0, ONLINE + o.order_id))


class OnlineTickets:
    """One gate's online tickets (a no-op for a spot that does not sell online)."""

    def __init__(self, home: Home, terminal_id: str, store: GateStore, settings: GateSettings,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self.terminal_id = terminal_id
        self.store = store
        self.enabled = settings.online_tickets
        self.operator_url: str | None = None  # the operator to ask (None: POS_OPERATOR_URL, else merchants.yaml)
        self.monotonic = monotonic
        self._pause_until = 0.0
        self.reachable: bool | None = None  # the last look-up: answered, failed, or not made

    def sold(self, day: int) -> int:
        """Places of ``day`` taken by online tickets (not refunded) and by the other gates' reported sales."""
        if not self.enabled:
            return 0
        (online,), = self.store.fetch("SELECT COALESCE(SUM(quantity), 0) FROM online_orders WHERE day = ? AND "
                                      "status = 'sold'", (day,))
        return int(online) + self.store.mark(OTHERS + str(day))

    def prepare(self, wallet_id: str, now: int) -> None:
        """Before the gate's rules: a pass for each of the wallet's online tickets of today; when none is left to
        use, ask the operator for one the gate has not heard of (sets :attr:`reachable`)."""
        self.reachable = None
        if not self.enabled:
            return
        day = china_day(now)
        self._passes(wallet_id, day, now)
        if self.store.usable_pass(wallet_id, day) is None:
            self.reachable = self._lookup(wallet_id, day, now)

    def unseen(self, wallet_id: str, now: int) -> int | None:
        """When the gate could not ask the operator about this wallet: the time of its last ticket sync (0: never)
        to tell the visitor, once; None to sell as usual (online, or the visitor's second tap within
        :data:`OFFER_S`)."""
        if not self.enabled or self.reachable is not False:
            return None
        offered = self.store.fetch("SELECT until_ms FROM online_offers WHERE wallet_id = ?", (wallet_id,))
        if offered and offered[0][0] >= now:
            self.store.write("DELETE FROM online_offers WHERE wallet_id = ?", (wallet_id,))
            return None  # tapped again: buys at the gate
        self.store.write("INSERT INTO online_offers (wallet_id, until_ms) VALUES (?, ?) ON CONFLICT(wallet_id) DO "
                         "UPDATE SET until_ms = excluded.until_ms", (wallet_id, now + OFFER_S * 1000))
        return self.store.mark(SYNCED_MS)

    def _passes(self, wallet_id: str, day: int, now: int) -> None:
        for order_id, sku, quantity, elsewhere in self.store.fetch(
                "SELECT order_id, sku, quantity, used_elsewhere FROM online_orders WHERE wallet_id = ? AND day = ? "
                "AND status = 'sold'", (wallet_id, day)):
            if quantity > elsewhere and not self.store.has_pass(ONLINE + order_id):  # a write only the first time
                self.store.online_pass(day, wallet_id, order_id, sku, quantity - elsewhere, now)

    def _lookup(self, wallet_id: str, day: int, now: int) -> bool:
        """Ask the operator for the wallet's tickets of ``day``; False when it could not be asked."""
        if self.monotonic() < self._pause_until:
            return False
        try:  # a fresh connection each time: measured ~45 ms an answer on a kept-alive one to uvicorn, ~6-11 ms so
            with OperatorClient.for_terminal(self.home, self.terminal_id, self.operator_url,
                                             retry=RetryPolicy(attempts=1), timeout=LOOKUP_TIMEOUT_S) as cli:
                data = cli.call("GET", "/v1/tickets/lookup", params={"wallet_id": wallet_id, "day": day_text(day)})
            answer = TicketLookupAnswer.model_validate(data)
        except OperatorRefused:
            return True  # it answered (e.g. the spot sells nothing online there): no ticket to learn
        except (OperatorUnavailable, InvalidInput, ValidationError, OSError):
            self._pause_until = self.monotonic() + OFFLINE_PAUSE_S  # no key yet, unreachable, a garbled answer
            return False
        learn(self.store, answer.orders)
        self._passes(wallet_id, day, now)
        return True


def sync_gate(home: Home, terminal_id: str, cli: OperatorClient) -> dict[str, Any] | None:
    """The ticket part of a gate's sync (None for any other terminal, or when the operator sells no tickets online
    for the spot): report the entries used here and this gate's own sales today, learn the orders changed since the
    last version. Raises what the client raises otherwise."""
    if not online_gate(home, terminal_id):
        return None
    store = GateStore(home.terminal_dir(terminal_id) / "gate.db")
    try:
        now = now_ms()
        today = china_day(now)
        uses = [{"order_id": oid, "used": used} for oid, used in store.fetch(
            "SELECT o.order_id, p.used FROM passes p JOIN online_orders o ON p.voucher_id = ? || o.order_id "
            "WHERE p.used > o.reported ORDER BY o.order_id", (ONLINE,))]
        reported, learnt = len(uses), 0
        since = store.mark(VERSION)
        gate_sold = store.day_counts(today)[1]
        while True:
            chunk, uses = uses[:MAX_USES], uses[MAX_USES:]
            try:
                answer = TicketSyncAnswer.model_validate(cli.call("POST", "/v1/tickets/sync", {
                    "since": since, "day": day_text(today), "gate_sold": gate_sold, "uses": chunk}))
            except OperatorRefused as exc:
                if exc.code in ("unknown_spot", "no_route"):
                    return None  # this operator sells no tickets online for the spot: nothing to learn
                raise
            learn(store, answer.orders)
            with store.transaction():
                store.conn.executemany("UPDATE online_orders SET reported = MAX(reported, ?) WHERE order_id = ?",
                                       [(u["used"], u["order_id"]) for u in chunk])
            learnt += len(answer.orders)
            since = answer.version
            store.set_mark(VERSION, since)
            if not answer.more and not uses:
                break
        store.set_mark(OTHERS + str(today), answer.others_sold)
        store.set_mark(SYNCED_MS, now)
        return {"version": since, "orders_learnt": learnt, "entries_reported": reported,
                "online_sold": answer.online_sold, "others_sold": answer.others_sold, "capacity": answer.capacity}
    finally:
        store.close()


def day_summary(home: Home, terminal_id: str, day: dt.date) -> dict[str, Any]:
    """For the gate's end-of-day report: ``{"online_tickets": {"entries", "orders"}}``, the entries on online
    tickets at this gate on ``day`` and their orders (empty for any other terminal)."""
    if not online_gate(home, terminal_id):
        return {}
    store = GateStore(home.terminal_dir(terminal_id) / "gate.db")
    try:
        (entries, orders), = store.fetch("SELECT COALESCE(SUM(used), 0), COUNT(*) FROM passes WHERE day = ? AND "
                                         "voucher_id LIKE ? AND used > 0", (day_number(day.isoformat()), ONLINE + "%"))
    finally:
        store.close()
    return {"online_tickets": {"entries": int(entries), "orders": int(orders)}}
