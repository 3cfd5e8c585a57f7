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
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ecny_nfc.reader import Cancelled, CancelSignal, CardConnection, CardRemoved, MultipleCards, NoCard, Reader
from pos.config import GateSettings, Product
from pos.gate.decision import ANTI_PASSBACK, CAPACITY, PAID, PREPAID, GateDecision
from pos.home import Home
from pos.ledger import AUTOCHECKPOINT_PAGES, IDLE_CHECKPOINT_COMMITS
from pos.payment.card_client import CardStatusError, TraceEntry, WalletClient
from pos.payment.outcome import Declined
from pos.payment.reasons import Reason
from pos.payment.session import PaymentSession
from wallet import apdu as sw
from wallet.card import china_day
from wallet.clock import now_ms
from wallet.errors import EcnyError, InvalidInput, SignatureError
from wallet.protocol import AuthRequest
from wallet.voucher import CHALLENGE_SIZE, Voucher

Clock = Callable[[], int]  # milliseconds since the epoch

__all__ = ["ANTI_PASSBACK", "CAPACITY", "PAID", "PREPAID", "Gate", "GateDecision", "GateError", "GateStore"]

_RECONCILED = "ledger_seq_reconciled"  # ledger entries up to here have their passes


class GateError(EcnyError):
    """The gate cannot run (wrong terminal kind, unknown product, unusable gate database)."""


class GateStore:
    """Passes and daily counters in SQLite. Safe to share between threads (one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")  # checkpoints between taps
            self.conn.executescript("""
                CREATE TABLE IF NOT EXISTS passes (
                    id INTEGER PRIMARY KEY, day INTEGER NOT NULL, wallet_id TEXT NOT NULL, voucher_id TEXT UNIQUE,
                    sku TEXT NOT NULL, tickets INTEGER NOT NULL, used INTEGER NOT NULL,
                    bought_ms INTEGER NOT NULL, last_entry_ms INTEGER NOT NULL);
                CREATE INDEX IF NOT EXISTS passes_wallet ON passes(wallet_id, id);
                CREATE TABLE IF NOT EXISTS days (day INTEGER PRIMARY KEY, entries INTEGER NOT NULL,
                                                 sold INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            """)
        except sqlite3.DatabaseError as exc:
            raise GateError(f"cannot open gate database {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._writes = 0  # since the last idle-time checkpoint

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self, every: int = IDLE_CHECKPOINT_COMMITS) -> bool:
        """Copy the WAL into the database once ``every`` writes have gone by (call it between taps)."""
        with self._lock:
            if self._writes < every:
                return False
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._writes = 0
            return True

    def day_counts(self, day: int) -> tuple[int, int]:
        """(entries, tickets sold) on ``day``."""
        with self._lock:
            row = self.conn.execute("SELECT entries, sold FROM days WHERE day = ?", (day,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def has_pass(self, voucher_id: str) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM passes WHERE voucher_id = ?", (voucher_id,)).fetchone() is not None

    def usable_pass(self, wallet_id: str, day: int) -> tuple[int, int, int, int] | None:
        """(id, tickets, used, last_entry_ms) of the wallet's oldest pass of ``day`` with a ticket left."""
        with self._lock:
            return self.conn.execute(
                "SELECT id, tickets, used, last_entry_ms FROM passes WHERE wallet_id = ? AND day = ? "
                "AND used < tickets ORDER BY id LIMIT 1", (wallet_id, day)).fetchone()

    def last_entered(self, wallet_id: str) -> tuple[int, int, int] | None:
        """(tickets, used, last_entry_ms) of the pass the wallet last entered on (anti-passback)."""
        with self._lock:
            return self.conn.execute(
                "SELECT tickets, used, last_entry_ms FROM passes WHERE wallet_id = ? AND used > 0 "
                "ORDER BY last_entry_ms DESC LIMIT 1", (wallet_id,)).fetchone()

    def _bump_day(self, day: int, entries: int, sold: int) -> None:
        self.conn.execute("INSERT INTO days (day, entries, sold) VALUES (?, ?, ?) ON CONFLICT(day) DO UPDATE SET "
                          "entries = entries + excluded.entries, sold = sold + excluded.sold", (day, entries, sold))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One durable write (all or nothing) under the lock."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._writes += 1

    def _insert_pass(self, day: int, wallet_id: str, voucher_id: str | None, sku: str, tickets: int, used: int,
                     bought_ms: int, last_entry_ms: int) -> bool:
        """A new pass; False (and nothing written) when the voucher has one already."""
        return self.conn.execute(
            "INSERT INTO passes (day, wallet_id, voucher_id, sku, tickets, used, bought_ms, last_entry_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(voucher_id) DO NOTHING",
            (day, wallet_id, voucher_id, sku, tickets, used, bought_ms, last_entry_ms)).rowcount == 1

    def _use(self, pass_id: int, day: int, now_ms: int) -> None:
        self.conn.execute("UPDATE passes SET used = used + 1, last_entry_ms = ? WHERE id = ?", (now_ms, pass_id))
        self._bump_day(day, 1, 0)

    def buy(self, day: int, wallet_id: str, voucher_id: str | None, sku: str, tickets: int, now_ms: int) -> None:
        """Record a pass of ``tickets`` with its first entry used (a pass restored for this voucher meanwhile
        gets the entry; its tickets are sold once)."""
        with self._transaction():
            row = self.conn.execute("SELECT id FROM passes WHERE voucher_id = ?", (voucher_id,)).fetchone() \
                if voucher_id is not None else None
            if row is not None:
                self._use(row[0], day, now_ms)
                return
            self._insert_pass(day, wallet_id, voucher_id, sku, tickets, 1, now_ms, now_ms)
            self._bump_day(day, 1, tickets)

    def restore(self, day: int, wallet_id: str, voucher_id: str, sku: str, tickets: int, bought_ms: int) -> bool:
        """Record the pass of a payment the gate never got to record (no entry used yet); False if it exists."""
        with self._transaction():
            added = self._insert_pass(day, wallet_id, voucher_id, sku, tickets, 0, bought_ms, 0)
            if added:
                self._bump_day(day, 0, tickets)
        return added

    def enter(self, pass_id: int, day: int, now_ms: int) -> None:
        """Use one more ticket of a pass."""
        with self._transaction():
            self._use(pass_id, day, now_ms)

    def mark(self, name: str) -> int:
        with self._lock:
            row = self.conn.execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def set_mark(self, name: str, value: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO marks (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                              "value = excluded.value", (name, value))


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
        """(entries today, remaining capacity today)."""
        entries, sold = self.store.day_counts(china_day(self.clock() if now_ms is None else now_ms))
        return entries, max(0, self.settings.daily_capacity - sold)

    # -- the rules --------------------------------------------------------------------------------------------------
    def decide_without_payment(self, wallet_id: str, quantity: int, now_ms: int,
                               prove: Callable[[], Reason | None]) -> GateDecision | None:
        """Apply pass, anti-passback and capacity rules; None means "charge the wallet for new tickets".

        A ticket left on one of today's passes is used first (the oldest pass). ``prove`` is asked before that
        entry is counted (the card's proof of its key); a reason from it stops the visitor and counts nothing."""
        day = china_day(now_ms)
        usable = self.store.usable_pass(wallet_id, day)
        if usable is not None:
            pass_id, tickets, used, last_ms = usable
            problem = prove()
            if problem is not None:
                refused = self._stop(problem.value, [], wallet_id)
                refused.proof_failed = True
                return refused
            self.store.enter(pass_id, day, now_ms)
            entries, remaining = self.stats(now_ms)
            return GateDecision(True, PREPAID, entries, remaining, wallet_id=wallet_id, tickets=tickets,
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
