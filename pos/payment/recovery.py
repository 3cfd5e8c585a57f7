"""Torn and orphan recovery: the open intents a card in the field can answer are settled before anything else, with
one RECOVER APDU however many are open.

Which open intents a tap asks the card about:

- those torn on this wallet (the card left after PAY was sent: the ``torn`` entry names the wallet and the counter
  the PAY would produce);
- orphans, the intents no running charge owns (their process died): one whose pay-sent mark names this wallet is
  asked like a torn one; one with no mark whose process ran in this boot never sent PAY and is closed ``void``
  without asking (:mod:`pos.payment.pay_marks` says why that is sound); any other (an unreadable mark, a process of
  an earlier boot) is asked of every card.

RECOVER carries a filter of all their challenges; the card answers from its transaction log (its last payments):
the counter ``F`` of the oldest payment the log holds, and the vouchers whose challenge the filter admits. With the
card's counter ``N``, an intent whose PAY would have produced counter ``c`` is decided:

- a voucher with its challenge: verified and recorded once (the payment entry closes the intent);
- none, and ``N < c`` (the PAY never ran) or ``F <= c <= N`` (the card's payment ``c`` answers another challenge):
  no PAY of it ever executed: ``void`` (this charge's own intent stays open: it simply pays);
- none, and ``c < F``: the log no longer reaches ``c``: ``unresolved``, for the operator to reconcile;
- an intent without a known wallet and counter and no voucher stays open; after seven days it is ``unresolved``.

A mixin of :class:`pos.payment.session.PaymentSession`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from ecny_nfc.reader import CardRemoved
from pos.ledger import Entry, OpenIntent
from pos.payment.card_client import CardStatusError, WalletClient
from pos.payment.outcome import Declined
from pos.payment.pay_marks import PayMark, read_marks, sweep_marks, write_mark
from pos.payment.process import _ACTIVE, _ACTIVE_LOCK, BOOT_ID, OWNER, _owner_alive, owner_boot
from pos.payment.reasons import Reason
from pos.payment.unwritten import KEPT, Unwritten
from pos.payment.vouchers import PaymentNotWritten, check_recovered, record_payment
from wallet import apdu as sw
from wallet.certs import WalletCertInfo
from wallet.errors import EncodingError
from wallet.protocol import CardInfo, Recovered
from wallet.voucher import Voucher

if TYPE_CHECKING:
    from pos.payment.session import TerminalContext

ORPHAN_MAX_AGE = dt.timedelta(days=7)
NOT_PAID = ("void", "unresolved", "open")  # how an intent settles when no voucher was recorded for it


SWEEP_EVERY = 16  # charges between two sweeps of the marks of closed intents


class Torn(Exception):
    """The card left the field after PAY was sent: this charge's intent is now tied to that wallet."""

    def __init__(self, wallet_id: str, counter: int) -> None:
        self.wallet_id = wallet_id
        self.counter = counter


def recorded(results: dict[int, str]) -> dict[int, str]:
    """Of settled intents ({intent seq: voucher id or one of NOT_PAID}), those a voucher was recorded for."""
    return {seq: outcome for seq, outcome in results.items() if outcome not in NOT_PAID}


def _created_ms(intent: OpenIntent) -> int:
    return int(dt.datetime.fromisoformat(intent.created.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Ask:
    intent: OpenIntent
    counter: int | None  # the counter its PAY would produce, when a torn tap or a pay-sent mark names it
    own: bool  # this charge's intent


class Recovery:
    """Settling the open intents of the terminal that a card in the field can answer."""

    ctx: TerminalContext
    _intent: Entry | None
    _closed: bool
    _issuer_der: bytes
    _kept: str | None

    def _record(self, voucher: Voucher, intent_seq: int, cert_der: bytes, issuer_der: bytes) -> Entry:
        """Commit the payment entry (once per voucher id), with its intent's instant discount; it closes the intent
        in the same transaction. A voucher the ledger refuses (disk full) is kept in memory to be written later
        (:mod:`pos.payment.unwritten`)."""
        own = self._intent
        intent = own if own is not None and own.seq == intent_seq else self.ctx.ledger.entry(intent_seq)
        discount = intent.data.get("discount") if intent is not None else None
        try:
            return record_payment(self.ctx.ledger, voucher, intent_seq, cert_der, issuer_der, discount)
        except PaymentNotWritten:
            KEPT.keep(self.ctx.ledger.path, Unwritten(voucher, intent_seq, cert_der, issuer_der, discount))
            if self._intent is not None and intent_seq == self._intent.seq:
                self._kept = voucher.voucher_id
            raise

    def _arm_pay(self, wallet_id: str, counter: int) -> None:
        """Right before PAY: leave this charge's pay-sent mark (the wallet and the counter the PAY will produce).
        When it cannot be left, no PAY is sent (:class:`Declined`, ``terminal_error``)."""
        intent = self._intent
        assert intent is not None
        path = self.ctx.ledger.path
        try:
            # stale marks only wait: sweeping them is kept out of most taps. Two residues, not one: a plain charge
            # writes two entries, so its intent's seq keeps one parity and would never hit a single residue
            if intent.seq % SWEEP_EVERY < 2:
                sweep_marks(path, {i.seq for i in self.ctx.ledger.open_intents()})
            write_mark(path, PayMark(intent.seq, bytes.fromhex(intent.data["challenge"]), wallet_id, counter))
        except OSError as exc:
            raise Declined(Reason.TERMINAL_ERROR, f"cannot note the payment before sending it: {exc}",
                           wallet_id=wallet_id) from None

    def _removed(self, torn: Torn | None) -> NoReturn:
        if torn is not None:
            raise torn
        raise Declined(Reason.CARD_REMOVED, "the wallet left the field before it was asked to pay")

    def _same_charge_paid(self, paid: dict[int, str], amount_fen: int) -> str | None:
        """A voucher just recovered for an earlier charge of this amount whose card left mid-PAY (or whose
        terminal died): a retry of that charge, not a second purchase."""
        for seq, voucher_id in paid.items():
            intent = self.ctx.ledger.entry(seq)
            if intent is not None and intent.amount_fen == amount_fen:
                return voucher_id
        return None

    def _is_orphan(self, intent: OpenIntent) -> bool:
        """An intent no running charge owns: its process died (or ended with the payment held for recovery)."""
        if self._intent is not None and intent.seq == self._intent.seq:
            return False
        if intent.owner == OWNER:
            with _ACTIVE_LOCK:
                return (str(self.ctx.ledger.path), intent.seq) not in _ACTIVE
        return not _owner_alive(intent.owner)

    def _resolve_intents(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo,
                         torn: Torn | None) -> dict[int, str]:
        """Settle the open intents this card can answer; return {intent seq: voucher id | void | unresolved | open}.
        At most one APDU (RECOVER), and only when there is something to ask."""
        asks: list[_Ask] = []
        closing: list[tuple[str, OpenIntent, str | None, int | None, dict[str, str]]] = []
        marks: dict[int, PayMark] | None = None
        for intent in self.ctx.ledger.open_intents():
            own = self._intent is not None and intent.seq == self._intent.seq
            if intent.wallet_id is not None:
                if intent.wallet_id == info.wallet_id:
                    asks.append(_Ask(intent, intent.counter, own))
                continue
            if not self._is_orphan(intent):
                continue
            if marks is None:
                marks = read_marks(self.ctx.ledger.path)
            mark = marks.get(intent.seq)
            if mark is not None and mark.wallet_id and mark.challenge == intent.challenge:
                if mark.wallet_id == info.wallet_id:
                    asks.append(_Ask(intent, mark.counter, False))
            elif mark is None and BOOT_ID and owner_boot(intent.owner) == BOOT_ID:
                closing.append(("void", intent, None, None,
                                {"proof": "its process ended in this boot without leaving a pay-sent mark: "
                                          "no PAY was sent"}))
            else:
                asks.append(_Ask(intent, None, False))
        results = self._ask(client, info, cert, asks, torn, closing) if asks else {}
        self._close_many(closing)
        results.update({intent.seq: kind for kind, intent, *_ in closing})
        if marks:
            sweep_marks(self.ctx.ledger.path, {i.seq for i in self.ctx.ledger.open_intents()})
        return results

    def _ask(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, asks: list[_Ask],
             torn: Torn | None, closing: list[tuple[str, OpenIntent, str | None, int | None, dict[str, str]]],
             ) -> dict[int, str]:
        answer = self._recover(client, info, [a.intent.challenge for a in asks], torn)
        found: dict[bytes, bytes] = {}
        for raw in answer.vouchers:
            try:
                found.setdefault(Voucher.decode(raw).body.challenge, raw)
            except EncodingError:
                continue  # a voucher for none of ours could be anything; ours are checked below
        results: dict[int, str] = {}
        now_ms = self.ctx.now_ms()
        for ask in asks:
            intent, c = ask.intent, ask.counter
            logged = found.get(intent.challenge)
            wallet = info.wallet_id if c is not None else None
            if logged is not None:
                voucher, problem = check_recovered(logged, info, cert, intent.amount_fen, self.ctx.merchant_id,
                                                   self.ctx.terminal_id, intent.challenge, _created_ms(intent),
                                                   now_ms, c)
                if voucher is None:
                    assert problem is not None
                    closing.append(("unresolved", intent, info.wallet_id, c, {"problem": problem[1]}))
                    continue
                self._record(voucher, intent.seq, info.cert_der, self._issuer_der)
                if ask.own:
                    self._closed = True
                results[intent.seq] = voucher.voucher_id
            elif c is not None and (info.counter < c or answer.log_first <= c):
                if ask.own:
                    results[intent.seq] = "open"  # this charge pays again; its intent stays open until then
                    continue
                proof = (f"card counter {info.counter} never reached {c}" if info.counter < c else
                         f"the card's payment {c} answers another challenge")
                closing.append(("void", intent, wallet, c, {"proof": proof}))
            elif c is not None:
                closing.append(("unresolved", intent, wallet, c,
                                {"problem": f"the card's log starts at counter {answer.log_first}, past {c}"}))
            elif now_ms - _created_ms(intent) > ORPHAN_MAX_AGE.total_seconds() * 1000:
                closing.append(("unresolved", intent, None, None,
                                {"problem": "no card answered this charge's challenge within seven days"}))
            else:
                results[intent.seq] = "open"
        return results

    def _recover(self, client: WalletClient, info: CardInfo, challenges: list[bytes],
                 torn: Torn | None) -> Recovered:
        """RECOVER; from a card without it (6D00), GET LAST TRANSACTION for each: a log of its last payment."""
        try:
            try:
                return client.recover(challenges)
            except CardStatusError as exc:
                if exc.status != sw.SW_INS_NOT_SUPPORTED:
                    raise
            vouchers = []
            for challenge in challenges:
                try:
                    vouchers.append(client.last_transaction(challenge))
                except CardStatusError as exc:
                    if exc.status != sw.SW_REFERENCED_DATA_NOT_FOUND:
                        raise
            return Recovered(info.counter, tuple(vouchers))
        except CardRemoved:
            self._removed(torn)
        except (CardStatusError, EncodingError) as exc:  # EncodingError: an answer cut short of its status word
            raise Declined(Reason.CARD_ERROR, str(exc), wallet_id=info.wallet_id) from None

    def _close_many(self, closing: list[tuple[str, OpenIntent, str | None, int | None, dict[str, str]]]) -> None:
        """Close intents void or unresolved, in one durable commit."""
        if not closing:
            return
        with self.ctx.ledger.transaction() as tx:
            for kind, intent, wallet_id, counter, data in closing:
                tx.append(kind, wallet_id=wallet_id, counter=counter, amount_fen=intent.amount_fen,
                          data={"intent": intent.seq, **data})
        if self._intent is not None and any(i.seq == self._intent.seq for _, i, *_ in closing):
            self._closed = True
