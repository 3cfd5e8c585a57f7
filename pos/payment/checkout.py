"""Taking a payment at a configured terminal through any reader: the one entry point the CLI and UIs share."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ecny_nfc.reader import Reader
from pos.home import Home
from pos.payment import discounts
from pos.payment.control import ChargeControl
from pos.payment.outcome import Outcome
from pos.payment.session import PaymentSession
from pos.payment.unwritten import KEPT
from wallet.errors import EcnyError


class CheckoutClosed(EcnyError):
    """A charge was asked of a terminal that is shutting down."""


class Checkout:
    """A terminal's payment desk for the life of a process: one ledger connection and one terminal context, so each
    charge starts with warm SQLite caches and the wallet CAs already learnt, and the WAL is checkpointed between
    customers (:meth:`idle`) rather than when a connection closes after every charge.

    Charges run one at a time (a terminal takes one customer at once); they may come from different threads."""

    def __init__(self, home: Home, terminal_id: str) -> None:
        home.terminal(terminal_id)
        self.ledger = home.ledger(terminal_id)
        self.ctx = home.context(terminal_id, self.ledger)
        self._recovery_timeout = self.ctx.recovery_timeout
        self._lock = threading.Lock()
        self._closed = False

    def take(self, reader: Reader, amount_fen: int, *, timeout: float | None = 30.0,
             cancel: threading.Event | ChargeControl | None = None, recovery_timeout: float | None = None,
             after_pay: Callable[[], None] | None = None, discount: bool = True) -> Outcome:
        """Wait up to ``timeout`` for a card on ``reader`` and charge it ``amount_fen``, less the instant discount a
        campaign gives it (:mod:`pos.payment.discounts`; not with ``discount=False``), decided before the card is
        asked for and shown on a :class:`ChargeControl` as ``offer``. Payments an earlier charge could not write
        (disk full) are written first, when the disk now allows (:mod:`pos.payment.unwritten`).

        ``after_pay`` is a tester's fault hook that runs right after the card answers PAY (e.g. a power loss).
        """
        with self._lock:
            if self._closed:
                raise CheckoutClosed("the terminal is shutting down")
            self.ctx.after_pay = after_pay
            self.ctx.recovery_timeout = self._recovery_timeout if recovery_timeout is None else recovery_timeout
            KEPT.write(self.ledger)
            offer = discounts.quote(self.ledger, amount_fen, self.ctx.now_ms()) if discount else None
            if isinstance(cancel, ChargeControl):
                cancel.offer = offer
            try:
                outcome = PaymentSession(self.ctx, reader).pay(
                    offer.net_fen if offer else amount_fen, timeout=timeout, cancel=cancel,
                    discount=offer.to_data() if offer else None)
            finally:
                self.ctx.after_pay = None
            return self._with_discount(outcome, offer)

    def _with_discount(self, outcome: Outcome, offer: discounts.Offer | None) -> Outcome:
        """The outcome with its instant discount: an approved one's as its payment entry records it (a tap may be
        settled by an earlier charge's recovered payment), a declined one's as offered."""
        given = offer.to_data() if offer else None
        if outcome.approved and outcome.voucher_id and (offer is not None or outcome.recovered):
            entry = self.ledger.payment(outcome.voucher_id)
            given = entry.data.get("discount") if entry is not None else None
        if given:
            outcome.discount_fen, outcome.campaign_id = int(given["discount_fen"]), str(given["campaign_id"])
        return outcome

    def idle(self) -> None:
        """Between customers: copy the write-ahead log into the database when enough commits went by."""
        with self._lock:
            if not self._closed:
                self.ledger.checkpoint()

    def close(self) -> None:
        """Close the ledger, once a charge under way has finished (later charges are refused)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.ledger.close()

    def __enter__(self) -> Checkout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def take_payment(home: Home, terminal_id: str, reader: Reader, amount_fen: int, *, timeout: float | None = 30.0,
                 cancel: threading.Event | ChargeControl | None = None, recovery_timeout: float | None = None,
                 after_pay: Callable[[], None] | None = None) -> Outcome:
    """One charge on a fresh :class:`Checkout` (a command that takes one payment and exits)."""
    with Checkout(home, terminal_id) as checkout:
        return checkout.take(reader, amount_fen, timeout=timeout, cancel=cancel, recovery_timeout=recovery_timeout,
                             after_pay=after_pay)
