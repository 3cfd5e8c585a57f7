"""One charge, driven end to end: prepare, wait for a card, read and verify it, check limits, PAY, verify the
voucher, commit, answer.

When a charge starts, before any card is in the field, the terminal durably writes an ``intent``: the amount and the
random challenge its PAY will carry. The customer's tap then costs one durable commit (the payment), and a PAY whose
answer never arrives can always be recovered, because the challenge is on disk and the card keeps its recent
payments in a transaction log that one RECOVER command reads for all of a terminal's open intents at once
(:mod:`pos.payment.recovery`):
- the card leaves mid-PAY (a torn tap): a ``torn`` entry names the wallet and the counter; when that wallet is next
  in the field (a re-tap in the same charge, or any later tap at this terminal) its counter and its log either
  recover the voucher (recorded once, as the payment) or show it was not charged;
- the terminal dies after PAY (power loss, crash): the intent of a process that no longer runs is an orphan, and
  every later tap asks the card in the field for it until one card answers with the voucher (a charge whose
  process died before PAY, with no pay-sent mark, is closed ``void``: :mod:`pos.payment.pay_marks`).
An approval is reported only after its payment entry is committed. A charge that never sent PAY is closed ``void``.

The clerk can cancel until PAY is sent (:mod:`pos.payment.control`): the cancel is checked before every command
APDU and the reader's waits watch it, so a cancel stops the tap within one APDU and charges nothing. Once PAY is
sent the charge runs to its outcome. After a tear the session waits for the same wallet until one deadline, the one
the screen counts down; a clerk who cancels that wait gives up on it, and the next tap of that wallet at this
terminal settles the payment.

The recovery of torn and orphaned intents is :mod:`pos.payment.recovery`; checking and recording a voucher is
:mod:`pos.payment.vouchers`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ecny_nfc.reader import Cancelled, CardConnection, CardRemoved, MultipleCards, NoCard, Reader, ReaderError
from pos.ledger import Entry, Ledger
from pos.payment import control as stages
from pos.payment.card_client import CardStatusError, KnownIssuers, TraceEntry, WalletClient
from pos.payment.control import ChargeCancelled, ChargeControl
from pos.payment.outcome import Declined, Outcome
from pos.payment.process import _ACTIVE, _ACTIVE_LOCK, OWNER, _GcDeferred
from pos.payment.reasons import Reason, reason_for_status
from pos.payment.recovery import NOT_PAID, Recovery, Torn, recorded
from pos.payment.risk import check_limits, offline_left
from pos.payment.vouchers import check_voucher
from wallet import apdu as sw
from wallet import clock
from wallet.certs import WalletCertInfo
from wallet.errors import CertificateError, EncodingError
from wallet.limits import OfflineCaps
from wallet.protocol import STATUS_ACTIVE, CardInfo, PayRequest
from wallet.voucher import CNY

MAX_TAPS = 5


@dataclass
class TerminalContext:
    """What a terminal knows: who it is, whom it trusts, its ledger and its offline caps."""

    merchant_id: str
    terminal_id: str
    roots: tuple[bytes, ...]
    ledger: Ledger
    caps: OfflineCaps = field(default_factory=OfflineCaps)
    issuers: KnownIssuers = field(default_factory=KnownIssuers)  # wallet-CA certificates: cards need not send them
    recovery_timeout: float = 10.0
    after_pay: Callable[[], None] | None = None  # tester fault: runs right after the card answers PAY
    clock_ahead_ms: Callable[[], int | None] | None = None  # the clock offset learnt at the last sync (None: never)
    clock_stop_ms: int = 3_600_000  # beyond this the terminal stops selling offline

    def now_ms(self) -> int:
        return clock.now_ms()

    def clock_wrong(self) -> bool:
        """Whether the terminal's clock is known to be off by more than ``clock_stop_ms`` (then it sells nothing
        offline: a voucher would be dated on the wrong day). Never, when no offset was ever learnt."""
        ahead = self.clock_ahead_ms() if self.clock_ahead_ms is not None else None
        return ahead is not None and abs(ahead) > self.clock_stop_ms


class PaymentSession(Recovery):
    """Takes one payment through a reader.

    ``card_read`` is what READ INFO answered on the reader's first connection, when the caller selected and read
    the card already (a gate identifies a wallet before it decides to charge): that connection's tap starts from it
    instead of reading the card again. A card that comes back after a tear is read afresh."""

    def __init__(self, ctx: TerminalContext, reader: Reader, *,
                 card_read: tuple[CardInfo, bytes] | None = None) -> None:
        self.ctx = ctx
        self.reader = reader
        self._card_read = card_read
        self.trace: list[TraceEntry] = []
        self._torn_seen = False
        self._intent: Entry | None = None
        self._pay_sent = False  # a PAY of this charge may have reached a card
        self._closed = False  # this charge's intent has a payment, void or unresolved entry
        self._tap_started = 0.0
        self._decided = 0.0
        self._issuer_der = b""  # the certificate of the tapped card's issuer, once its chain verified
        self._kept: str | None = None  # this charge's voucher, paid but not written (kept: pos.payment.unwritten)
        self._control = ChargeControl()

    # -- public -----------------------------------------------------------------------------------------------------
    def pay(self, amount_fen: int, timeout: float | None = 30.0, cancel: threading.Event | ChargeControl | None = None,
            purpose: dict[str, Any] | None = None, discount: dict[str, Any] | None = None) -> Outcome:
        """Prepare a charge of ``amount_fen``, wait for a card and take it. Never raises for anything a card or
        reader does. ``Outcome.elapsed_ms`` is the tap-to-decision time: from the card entering the field.

        ``cancel`` (an event, or a :class:`ChargeControl` that also shows the charge's progress) cancels the charge
        until PAY is sent: within one APDU, nothing charged, the intent closed void.

        ``purpose`` (what the money buys, e.g. a gate's tickets) is recorded with the intent, so whoever finds the
        payment later (a restart, a recovered torn tap) knows what it was for; so is ``discount`` (the net is then
        ``amount_fen``: :mod:`pos.payment.discounts`)."""
        if amount_fen <= 0:
            raise ValueError("amount must be positive")
        self._control = cancel if isinstance(cancel, ChargeControl) else ChargeControl(cancel)
        data: dict[str, Any] = {"challenge": secrets.token_bytes(16).hex(), "owner": OWNER}
        data.update({k: v for k, v in (("purpose", purpose), ("discount", discount)) if v})
        with _ACTIVE_LOCK:  # no tap in this process may see the intent before it is registered as running
            intent = self._intent = self.ctx.ledger.append("intent", amount_fen=amount_fen, data=data)
            key = (str(self.ctx.ledger.path), intent.seq)
            _ACTIVE.add(key)
        try:
            try:
                outcome = self._pay(amount_fen, timeout)
            finally:
                self._control.done()
            decided = self._decided or time.perf_counter()
            if not self._closed and not self._pay_sent:
                self.ctx.ledger.append("void", amount_fen=amount_fen,
                                       data={"intent": intent.seq, "proof": "no PAY was sent"})
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(key)
        outcome.torn = outcome.torn or self._torn_seen
        outcome.trace = self.trace
        outcome.time_ms = self.ctx.now_ms()
        outcome.elapsed_ms = (decided - self._tap_started) * 1e3 if self._tap_started else 0.0
        return outcome

    def identify(self, conn: CardConnection) -> tuple[CardInfo, bytes, WalletCertInfo]:
        """SELECT, READ INFO and the certificate check a tap starts with, for a caller with rules of its own to
        apply before it charges (a gate): the card's info, its issuer's certificate and what its verified
        certificate says. Raises :class:`Declined`."""
        return self._read_card(WalletClient(conn, self.trace), self.ctx.now_ms(), None)

    def settle_open(self, conn: CardConnection, info: CardInfo, cert: WalletCertInfo) -> list[str]:
        """Settle, without charging, the open intents of this terminal that the identified card on ``conn`` can
        answer (its own torn payments, orphans); return the voucher ids recovered and recorded. A gate does this
        before it decides whether a returning visitor still has to pay. Raises :class:`Declined`."""
        return list(recorded(self._resolve_intents(WalletClient(conn, self.trace), info, cert, None)).values())

    # -- the flow ---------------------------------------------------------------------------------------------------
    def _pay(self, amount_fen: int, timeout: float | None) -> Outcome:
        torn: Torn | None = None
        control = self._control
        wait = control.waiting(stages.WAITING, timeout)
        for _ in range(MAX_TAPS):
            self._decided = 0.0
            try:
                conn = self.reader.connect(timeout=wait, cancel=control)
            except (NoCard, Cancelled) as exc:
                if torn is not None:
                    return self._gave_up(amount_fen, torn, "the clerk stopped waiting for the wallet"
                                         if isinstance(exc, Cancelled) else "the wallet did not come back in time")
                reason = Reason.CANCELLED if isinstance(exc, Cancelled) else Reason.NO_CARD
                return Outcome("declined", amount_fen, reason)
            except MultipleCards as exc:
                return Outcome("declined", amount_fen, Reason.MULTIPLE_CARDS, detail=str(exc))
            except ReaderError as exc:
                return Outcome("declined", amount_fen, Reason.TERMINAL_ERROR, detail=str(exc),
                               wallet_id=torn.wallet_id if torn else None, pending_recovery=self._pending())
            if not self._tap_started:
                self._tap_started = time.perf_counter()
            control.reading()
            guarded = _Guarded(conn, control)
            try:
                with _GcDeferred():
                    try:
                        return self._tap(guarded, amount_fen, torn)
                    finally:
                        self._decided = time.perf_counter()
            except ChargeCancelled:
                if guarded.unsent and self.trace and self.trace[-1].response is None:
                    self.trace.pop()  # the command the cancel stopped never reached the card
                if torn is not None:
                    return self._gave_up(amount_fen, torn, "the clerk stopped waiting for the wallet")
                return Outcome("declined", amount_fen, Reason.CANCELLED)
            except Torn as exc:
                torn = exc
                self._torn_seen = True
                wait = control.waiting(stages.RETAP, self.ctx.recovery_timeout)
                if wait is None or wait <= 0:
                    return Outcome("declined", amount_fen, Reason.CARD_REMOVED, wallet_id=torn.wallet_id,
                                   pending_recovery=True)
            except Declined as exc:
                return Outcome("declined", amount_fen, exc.reason, detail=exc.detail,
                               wallet_id=exc.wallet_id, pending_recovery=self._pending(), kept_voucher_id=self._kept)
            finally:
                conn.release()
        assert torn is not None
        return self._gave_up(amount_fen, torn, "too many attempts")

    @staticmethod
    def _gave_up(amount_fen: int, torn: Torn, detail: str) -> Outcome:
        """The wait for the torn wallet ended without it: the payment is held for the next tap of that wallet."""
        return Outcome("declined", amount_fen, Reason.CARD_REMOVED, wallet_id=torn.wallet_id, pending_recovery=True,
                       detail=detail)

    def _pending(self) -> bool:
        """Whether this charge may have taken money that is not recorded yet (held for recovery)."""
        return self._pay_sent and not self._closed

    def _tap(self, conn: CardConnection, amount_fen: int, torn: Torn | None) -> Outcome:
        client = WalletClient(conn, self.trace)
        now_ms = self.ctx.now_ms()
        if self._card_read is not None:  # selected and read on this connection already (a gate identified it)
            (info, issuer), self._card_read = self._card_read, None
            cert = self._verify(info, issuer, now_ms)
        else:
            info, _, cert = self._read_card(client, now_ms, torn)
        wid = info.wallet_id
        if torn is not None and wid != torn.wallet_id:
            raise Declined(Reason.CARD_REMOVED, "a different wallet was tapped; tap the wallet that was removed",
                           wallet_id=torn.wallet_id)
        results = self._resolve_intents(client, info, cert, torn)
        mine = results.pop(self._intent.seq, None) if self._intent else None
        paid = recorded(results)
        recovered = self._amounts(paid)
        if mine == "unresolved":
            raise Declined(Reason.CARD_ERROR, "the removed wallet's payment could not be confirmed", wallet_id=wid)
        if mine is not None and mine not in NOT_PAID:
            return self._approved(amount_fen, mine, wid, info.balance_fen, recovered,
                                  offline_left(info, self.ctx.caps, 0))
        if paid:
            earlier = self._same_charge_paid(paid, amount_fen)
            if earlier is not None:
                # The clerk charged again after a tear that had in fact paid: that payment settles this charge.
                self._close("void", wid, None, amount_fen, proof=f"paid by {earlier}, recovered at this tap")
                return self._approved(amount_fen, earlier, wid, info.balance_fen, recovered,
                                      offline_left(info, self.ctx.caps, 0))
        denylisted, seen = self.ctx.ledger.wallet_standing(wid)
        if denylisted:
            raise Declined(Reason.DENYLISTED, wallet_id=wid)
        if info.status != STATUS_ACTIVE:
            raise Declined(Reason.CARD_BLOCKED, wallet_id=wid)
        if seen > info.counter:
            raise Declined(Reason.REPLAYED_COUNTER, f"card counter {info.counter}, this terminal has seen {seen}",
                           wallet_id=wid)
        if self.ctx.clock_wrong():
            raise Declined(Reason.CLOCK_SKEW, wallet_id=wid)
        limit = check_limits(info, cert.tier, amount_fen, self.ctx.caps, now_ms)
        if limit is not None:
            raise Declined(limit, wallet_id=wid)
        return self._charge(client, info, cert, amount_fen, now_ms, recovered)

    def _amounts(self, paid: dict[int, str]) -> dict[str, int]:
        """{voucher id: amount} of the earlier payments a tap recovered ({intent seq: voucher id})."""
        amounts = {}
        for seq, voucher_id in paid.items():
            intent = self.ctx.ledger.entry(seq)
            amounts[voucher_id] = intent.amount_fen if intent is not None else 0
        return amounts

    @staticmethod
    def _approved(amount_fen: int, voucher_id: str, wallet_id: str, balance_fen: int | None,
                  recovered: dict[str, int], offline_left: int | None = None) -> Outcome:
        return Outcome("approved", amount_fen, voucher_id=voucher_id, wallet_id=wallet_id,
                       balance_after_fen=balance_fen, offline_left=offline_left, recovered=list(recovered),
                       recovered_fen=list(recovered.values()))

    def _read_card(self, client: WalletClient, now_ms: int,
                   torn: Torn | None) -> tuple[CardInfo, bytes, WalletCertInfo]:
        """SELECT and READ INFO, then the certificate check: the info, the issuer's certificate, the verified
        certificate. A card gone meanwhile is the tear ``torn`` names, or a decline."""
        try:
            client.select()
        except CardStatusError as exc:
            raise Declined(Reason.NOT_A_WALLET if exc.status == sw.SW_FILE_NOT_FOUND else Reason.CARD_ERROR,
                           str(exc)) from None
        except CardRemoved:
            self._removed(torn)
        except EncodingError as exc:  # an answer cut short of its status word
            raise Declined(Reason.CARD_ERROR, str(exc)) from None
        try:
            info, issuer = client.read_wallet(self.ctx.issuers)
        except CardRemoved:
            self._removed(torn)
        except CardStatusError as exc:
            raise Declined(Reason.CARD_ERROR, str(exc)) from None
        except EncodingError as exc:
            raise Declined(Reason.CARD_ERROR, f"wallet info does not parse: {exc}") from None
        return info, issuer, self._verify(info, issuer, now_ms)

    def _verify(self, info: CardInfo, issuer: bytes, now_ms: int) -> WalletCertInfo:
        at = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        try:
            cert = self.ctx.issuers.verify(info, issuer, self.ctx.roots, at)
        except CertificateError as exc:
            raise Declined(Reason(exc.reason), str(exc), wallet_id=info.wallet_id) from None
        self._issuer_der = issuer
        return cert

    def _charge(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, amount_fen: int, now_ms: int,
                recovered: dict[str, int]) -> Outcome:
        intent = self._intent
        assert intent is not None
        req = PayRequest(amount_fen, CNY, self.ctx.merchant_id, self.ctx.terminal_id,
                         bytes.fromhex(intent.data["challenge"]), now_ms)
        self._control.begin_pay()  # a cancel that came first stops here; one that comes later waits for the outcome
        try:
            return self._pay_and_record(client, info, cert, req, recovered)
        finally:
            self._control.end_pay()

    def _pay_and_record(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, req: PayRequest,
                        recovered: dict[str, int]) -> Outcome:
        intent = self._intent
        assert intent is not None
        amount_fen = req.amount_fen
        self._arm_pay(info.wallet_id, info.counter + 1)  # the pay-sent mark (pos.payment.pay_marks)
        self._pay_sent = True
        try:
            raw = client.pay(req)
        except CardRemoved:
            self._mark_torn(info.wallet_id, info.counter + 1, amount_fen)
        except EncodingError:
            raw = b""  # an answer cut short: damaged on the air like any other, so it is read again below
        except CardStatusError as exc:
            self._close("void", info.wallet_id, info.counter + 1, amount_fen,
                        proof=f"card refused PAY with {exc.status:04X}")
            raise Declined(reason_for_status(exc.status), str(exc), wallet_id=info.wallet_id) from None
        if self.ctx.after_pay is not None:
            self.ctx.after_pay()
        voucher, problem = check_voucher(raw, info, cert, req, self.ctx.now_ms)
        if problem is not None:
            # A damaged answer in transit is common on the air: read the card's stored voucher once more.
            try:
                voucher, problem2 = check_voucher(client.last_transaction(req.challenge), info, cert, req,
                                                 self.ctx.now_ms)
            except CardRemoved:
                self._mark_torn(info.wallet_id, info.counter + 1, amount_fen)
            except (CardStatusError, EncodingError):
                problem2 = problem
            if problem2 is not None:
                self._close("unresolved", info.wallet_id, info.counter + 1, amount_fen, problem=problem2[1])
                raise Declined(problem2[0], problem2[1], wallet_id=info.wallet_id)
        assert voucher is not None
        self._record(voucher, intent.seq, cert_der=info.cert_der, issuer_der=self._issuer_der)
        self._closed = True
        return self._approved(amount_fen, voucher.voucher_id, info.wallet_id, voucher.body.balance_after_fen,
                              recovered, offline_left(info, self.ctx.caps, 1))

    def _mark_torn(self, wallet_id: str, counter: int, amount_fen: int) -> NoReturn:
        """The card left after PAY was sent: tie this charge's intent to the wallet, then wait for it."""
        assert self._intent is not None
        self.ctx.ledger.append("torn", wallet_id=wallet_id, counter=counter, amount_fen=amount_fen,
                               data={"intent": self._intent.seq})
        raise Torn(wallet_id, counter) from None

    def _close(self, kind: str, wallet_id: str | None, counter: int | None, amount_fen: int, *,
               intent_seq: int | None = None, **data: str) -> None:
        """Close an intent (this charge's unless ``intent_seq`` names another) with a void or unresolved entry."""
        seq = intent_seq if intent_seq is not None else (self._intent.seq if self._intent else 0)
        self.ctx.ledger.append(kind, wallet_id=wallet_id, counter=counter, amount_fen=amount_fen,
                               data={"intent": seq, **data})
        if self._intent is not None and seq == self._intent.seq:
            self._closed = True


class _Guarded:
    """A card connection that checks the charge's cancel before every command APDU: a cancelled charge sends
    nothing more to the card (until PAY is sent, after which nothing stops it)."""

    def __init__(self, conn: CardConnection, control: ChargeControl) -> None:
        self._conn = conn
        self._control = control
        self.uid = conn.uid
        self.unsent = False  # the last command was stopped before it reached the card

    def transceive(self, apdu: bytes) -> bytes:
        if self._control.is_set():
            self.unsent = True
            raise ChargeCancelled("the clerk cancelled the charge")
        try:
            return self._conn.transceive(apdu)
        except Cancelled:  # the reader stopped a wait inside the exchange, before the card saw the command
            self.unsent = True
            raise ChargeCancelled("the clerk cancelled the charge") from None

    def is_present(self) -> bool:
        return self._conn.is_present()

    def release(self) -> None:
        self._conn.release()
