"""Ticket gate decisions: sell a ticket on a tap, anti-passback, daily capacity, entries today.

A tap at a gate pays for ``quantity`` tickets of the selected product in one offline payment and opens the gate
once. The wallet then holds a *pass* for the rest of the day: each later tap of the same wallet opens the gate again
without charging until every ticket on the pass has been used (a parent taps once per family member). A wallet whose
tickets are used up is refused for ``passback_window_s`` after its last entry (anti-passback); after the window a tap
buys new tickets. Daily capacity caps the tickets sold per day (China Standard Time).

Counts live in ``gate.db`` beside the terminal's ledger (SQLite, WAL, ``synchronous=FULL``), so a restart keeps
them; only the current day's two counters are held in memory, so a day of taps does not grow the process. The
ledger is the source of truth for what was paid: each sale's intent says what it buys, and :meth:`Gate.reconcile`
gives a pass to every ticket payment that has none (see there).

Before charging, the gate reads the wallet's identity (SELECT, READ INFO, certificate chain) to apply the rules; the
payment itself then runs through :class:`pos.payment.session.PaymentSession` on the same connection, starting from
that read (one read of the card per sale). A re-entry on a pass needs a fresh proof of the wallet's key: the gate
sends AUTHENTICATE with a random challenge and verifies the signature with the certified key before it counts the
entry, so a copy of a wallet's certificate and id (a clone without its key) cannot use the tickets its original
bought.

Tickets sold online (a spot with ``gate.online_tickets``) are passes too, made from the orders the gate learnt at
sync or looked up while online (:mod:`pos.gate.online_tickets`); capacity counts them with the gate's own sales.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from ecny_nfc.reader import Cancelled, CancelSignal, CardConnection, CardRemoved, MultipleCards, NoCard, Reader
from pos.config import GateSettings, Product
from pos.gate.decision import ANTI_PASSBACK, CAPACITY, ONLINE_TICKET, PAID, PREPAID, TICKET_UNSEEN, GateDecision
from pos.gate.online_tickets import OFFER_S, OnlineTickets
from pos.gate.store import ONLINE, GateError, GateStore
from pos.home import Home
from pos.payment.card_client import CardStatusError, TraceEntry, WalletClient
from pos.payment.outcome import Declined
from pos.payment.reasons import Reason
from pos.payment.session import PaymentSession
from pos.payment.unwritten import KEPT
from wallet import apdu as sw
from wallet.card import china_day
from wallet.clock import now_ms
from wallet.errors import EcnyError, InvalidInput, SignatureError
from wallet.protocol import AuthRequest
from wallet.voucher import CHALLENGE_SIZE, Voucher

Clock = Callable[[], int]  # milliseconds since the epoch

__all__ = ["ANTI_PASSBACK", "CAPACITY", "ONLINE_TICKET", "PAID", "PREPAID", "TICKET_UNSEEN", "Gate", "GateDecision",
           "GateError", "GateStore"]

_RECONCILED = "ledger_seq_reconciled"  # ledger entries up to here have their passes


class _Held:
    """A reader that hands out an already connected card first, then defers to the real reader (re-taps)."""

    def __init__(self, conn: CardConnection, reader: Reader) -> None:
        self._conn: CardConnection | None = conn
        self._reader = reader
        self.name = reader.name

    def connect(self, timeout: float | None = None, cancel: CancelSignal | None = None) -> CardConnection:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            return conn
        return self._reader.connect(timeout=timeout, cancel=cancel)

    def close(self) -> None:
        """The real reader belongs to the caller."""


class Gate:
    """One gate terminal: its products, settings, counts and the decision on each tap."""

    def __init__(self, home: Home, terminal_id: str, *, clock: Clock | None = None,
                 settings: GateSettings | None = None) -> None:
        merchant, terminal = home.terminal(terminal_id)
        if terminal.kind != "gate":
            raise InvalidInput(f"terminal {terminal_id} is a {terminal.kind}, not a gate")
        self.home = home
        self.terminal_id = terminal_id
        self.merchant = merchant
        self.terminal = terminal
        self.products: list[Product] = list(merchant.tickets)
        self.settings = settings or merchant.gate or GateSettings()
        self.clock: Clock = clock or now_ms
        self.store = GateStore(home.terminal_dir(terminal_id) / "gate.db")
        self.online = OnlineTickets(home, terminal_id, self.store, self.settings)  # tickets sold online
        self.ledger = home.ledger(terminal_id)
        self.ctx = home.context(terminal_id, self.ledger)
        self._reconciled = self.store.mark(_RECONCILED)
        self.reconcile()
        self.store.set_mark(_RECONCILED, self._reconciled)

    def close(self) -> None:
        self.store.close()
        self.ledger.close()

    def housekeeping(self) -> None:
        """Idle-time work between visitors (while a result shows): passes for payments found since the last look,
        then checkpoint the ledger's and the gate's WALs."""
        self.reconcile()
        self.ledger.checkpoint()
        self.store.checkpoint()

    def reconcile(self) -> list[str]:
        """Give every ticket payment in the ledger its pass: one the gate could not record (it stopped between the
        payment's commit and the pass) or one recovered later from a torn tap. Such a pass has no entry used yet:
        the gate never opened for it. A payment refunded meanwhile gets none. Returns the voucher ids restored;
        idempotent (passes are unique by voucher)."""
        restored: list[str] = []
        for payment in self.ledger.entries(kind="payment", since_seq=self._reconciled):
            self._reconciled = payment.seq  # only what was read: a payment committed meanwhile is read next time
            if payment.voucher_id is None or self.store.has_pass(payment.voucher_id):
                continue  # the usual case: the sale wrote its pass
            intent = self.ledger.entry(payment.data.get("intent", 0))
            bought = (intent.data.get("purpose") or {}).get("gate") if intent is not None else None
            if bought is None or payment.wallet_id is None:
                continue  # not a ticket sale (a payment taken through this ledger for something else)
            if self.ledger.refund_count(payment.voucher_id):
                continue  # refunded before it was ever a pass: the visitor has the money, not the tickets
            voucher = Voucher.decode(bytes.fromhex(payment.data["voucher"]))
            ts = voucher.body.timestamp_ms
            if self.store.restore(china_day(ts), payment.wallet_id, payment.voucher_id, bought["sku"],
                                  int(bought["tickets"]), ts):
                restored.append(payment.voucher_id)
        if restored:
            self.store.set_mark(_RECONCILED, self._reconciled)
        return restored

    def product(self, sku: str) -> Product:
        for p in self.products:
            if p.sku == sku:
                return p
        raise GateError(f"gate {self.terminal_id} sells no {sku!r}; it sells {', '.join(p.sku for p in self.products)}")

    def stats(self, now_ms: int | None = None) -> tuple[int, int]:
        """(entries today, remaining capacity today: less this gate's sales, the online tickets and the other gates'
        reported sales)."""
        day = china_day(self.clock() if now_ms is None else now_ms)
        entries, sold = self.store.day_counts(day)
        return entries, max(0, self.settings.daily_capacity - sold - self.online.sold(day))

    # -- the rules --------------------------------------------------------------------------------------------------
    def decide_without_payment(self, wallet_id: str, quantity: int, now_ms: int,
                               prove: Callable[[], Reason | None]) -> GateDecision | None:
        """Apply pass, anti-passback and capacity rules; None means "charge the wallet for new tickets".

        A ticket left on one of today's passes is used first (the oldest pass; an online ticket is a pass too).
        ``prove`` is asked before that entry is counted (the card's proof of its key); a reason from it stops the
        visitor and counts nothing."""
        day = china_day(now_ms)
        self.online.prepare(wallet_id, now_ms)
        usable = self.store.usable_pass(wallet_id, day)
        if usable is not None:
            pass_id, tickets, used, last_ms, key = usable
            problem = prove()
            if problem is not None:
                refused = self._stop(problem.value, [], wallet_id)
                refused.proof_failed = True
                return refused
            self.store.enter(pass_id, day, now_ms)
            entries, remaining = self.stats(now_ms)
            code = ONLINE_TICKET if key and key.startswith(ONLINE) else PREPAID
            return GateDecision(True, code, entries, remaining, wallet_id=wallet_id, tickets=tickets,
                                used=used + 1, last_entry_ms=last_ms or None, time_ms=now_ms)
        last = self.store.last_entered(wallet_id)
        if last is not None:
            tickets, used, last_ms = last
            if now_ms - last_ms < self.settings.passback_window_s * 1000:
                entries, remaining = self.stats(now_ms)
                return GateDecision(False, ANTI_PASSBACK, entries, remaining, wallet_id=wallet_id, tickets=tickets,
                                    used=used, last_entry_ms=last_ms, window_s=self.settings.passback_window_s,
                                    time_ms=now_ms)
        entries, remaining = self.stats(now_ms)
        synced = self.online.unseen(wallet_id, now_ms)  # offline: a ticket bought since the last sync is unseen
        if synced is not None:
            return GateDecision(False, TICKET_UNSEEN, entries, remaining, wallet_id=wallet_id, tickets=quantity,
                                synced_ms=synced or None, window_s=OFFER_S, time_ms=now_ms)
        if quantity > remaining:
            return GateDecision(False, CAPACITY, entries, remaining, wallet_id=wallet_id, tickets=quantity,
                                time_ms=now_ms)
        return None

    # -- one tap ----------------------------------------------------------------------------------------------------
    def admit(self, reader: Reader, sku: str, quantity: int = 1, *, timeout: float | None = 0.25,
              cancel: threading.Event | None = None,
              selection: Callable[[], tuple[str, int]] | None = None) -> GateDecision | None:
        """Wait up to ``timeout`` for a wallet and decide; None when no wallet came. Never raises for a card.

        ``selection``, when given, is asked for the ticket and quantity the moment a wallet arrives (a UI whose
        visitor may change them while the gate waits): what is charged is what was on screen at the tap."""
        product = self._selected(sku, quantity)
        try:
            conn = reader.connect(timeout=timeout, cancel=cancel)
        except (NoCard, Cancelled):
            return None
        except MultipleCards:
            return self._stop(Reason.MULTIPLE_CARDS.value, [])
        if selection is not None:
            sku, quantity = selection()
            try:
                product = self._selected(sku, quantity)
            except EcnyError:
                conn.release()
                raise
        if KEPT.write_news(self.ledger, self):  # a ticket payment kept after a disk failure and written since
            self.reconcile()  # (pos.payment.unwritten) gets its pass: the visitor enters on it, never pays twice
        reading = PaymentSession(self.ctx, reader)
        trace = reading.trace
        handed_over = False
        try:
            try:
                info, issuer, cert = reading.identify(conn)
                wallet_id = info.wallet_id
                if self.ledger.is_denylisted(wallet_id):
                    raise Declined(Reason.DENYLISTED, wallet_id=wallet_id)
                if any(i.wallet_id in (None, wallet_id) for i in self.ledger.open_intents()) \
                        and reading.settle_open(conn, info, cert):
                    # This wallet left mid-PAY here before, or a gate process died after a PAY, and that payment
                    # was read back: its tickets are a pass now, not to be charged for again.
                    self.reconcile()
            except Declined as exc:
                return self._stop(exc.reason.value, trace, exc.wallet_id)
            client = WalletClient(conn, trace)
            now_ms = self.clock()
            decision = self.decide_without_payment(wallet_id, quantity, now_ms,
                                                   prove=lambda: self._prove(client, wallet_id, cert.public_key,
                                                                             now_ms))
            if decision is not None:
                decision.sku = sku
                decision.trace = trace
                return decision
            handed_over = True
            outcome = PaymentSession(self.ctx, _Held(conn, reader), card_read=(info, issuer)).pay(
                product.price * quantity, timeout=timeout, cancel=cancel,
                purpose={"gate": {"sku": sku, "tickets": quantity}})
        finally:
            if not handed_over:
                conn.release()
        now_ms = self.clock()
        if not outcome.approved:
            assert outcome.reason is not None
            decision = self._stop(outcome.reason.value, trace + outcome.trace, outcome.wallet_id or wallet_id)
            decision.outcome = outcome
            decision.sku = sku
            return decision
        self.store.buy(china_day(now_ms), wallet_id, outcome.voucher_id, sku, quantity, now_ms)
        entries, remaining = self.stats(now_ms)
        return GateDecision(True, PAID, entries, remaining, wallet_id=wallet_id, sku=sku, tickets=quantity, used=1,
                            amount_fen=outcome.amount_fen, outcome=outcome, trace=trace + outcome.trace,
                            time_ms=now_ms)

    def _selected(self, sku: str, quantity: int) -> Product:
        """The product to sell, once the quantity is known to be in range."""
        if not 1 <= quantity <= 20:
            raise InvalidInput("quantity must be between 1 and 20")
        return self.product(sku)

    def _prove(self, client: WalletClient, wallet_id: str, key: ec.EllipticCurvePublicKey,
               now_ms: int) -> Reason | None:
        """AUTHENTICATE with a fresh challenge: None when the card signed it with the certified key."""
        request = AuthRequest(self.terminal_id, secrets.token_bytes(CHALLENGE_SIZE), now_ms)
        try:
            request.verify(wallet_id, client.authenticate(request), key)
        except CardRemoved:
            return Reason.CARD_REMOVED
        except CardStatusError as exc:
            return Reason.CARD_BLOCKED if exc.status == sw.SW_AUTH_METHOD_BLOCKED else Reason.CARD_ERROR
        except SignatureError:
            return Reason.BAD_SIGNATURE
        except EcnyError:  # a malformed answer (ApduError, EncodingError) or a reader failure
            return Reason.CARD_ERROR
        return None

    def _stop(self, code: str, trace: list[TraceEntry], wallet_id: str | None = None) -> GateDecision:
        now_ms = self.clock()
        entries, remaining = self.stats(now_ms)
        return GateDecision(False, code, entries, remaining, wallet_id=wallet_id, trace=trace, time_ms=now_ms)
