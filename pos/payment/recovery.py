"""Torn and orphan recovery: the open intents a card in the field can answer are settled before anything else.

- An intent torn on this wallet (the card left after PAY was sent) is decided by the card's counter and GET LAST
  TRANSACTION: the voucher is recovered (recorded once, as the payment), or the PAY never ran (void), or the card
  has moved on (unresolved).
- An orphan (an intent no running charge owns and no tear tied to a wallet: its terminal died after PAY) is asked
  with GET LAST TRANSACTION: only the card that was charged answers its challenge. After seven days unanswered it
  is closed unresolved.

A mixin of :class:`pos.payment.session.PaymentSession`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from ecny_nfc.reader import CardRemoved
from pos.ledger import Entry, OpenIntent
from pos.payment.card_client import CardStatusError, WalletClient
from pos.payment.outcome import Declined
from pos.payment.process import _ACTIVE, _ACTIVE_LOCK, OWNER, _owner_alive
from pos.payment.reasons import Reason
from pos.payment.vouchers import check_voucher, record_payment
from wallet import apdu as sw
from wallet import clock
from wallet.certs import WalletCertInfo
from wallet.errors import EncodingError
from wallet.protocol import CardInfo, PayRequest
from wallet.voucher import CNY, Voucher

if TYPE_CHECKING:
    from pos.payment.session import TerminalContext

ORPHAN_MAX_AGE = dt.timedelta(days=7)
NOT_PAID = ("void", "unresolved", "open")  # how an intent settles when no voucher was recorded for it


class Torn(Exception):
    """The card left the field after PAY was sent: this charge's intent is now tied to that wallet."""

    def __init__(self, wallet_id: str, counter: int) -> None:
        self.wallet_id = wallet_id
        self.counter = counter


def recorded(results: dict[int, str]) -> dict[int, str]:
    """Of settled intents ({intent seq: voucher id or one of NOT_PAID}), those a voucher was recorded for."""
    return {seq: outcome for seq, outcome in results.items() if outcome not in NOT_PAID}


class Recovery:
    """Settling the open intents of the terminal that a card in the field can answer."""

    ctx: TerminalContext
    _intent: Entry | None
    _closed: bool
    _issuer_der: bytes

    def _close(self, kind: str, wallet_id: str | None, counter: int | None, amount_fen: int, *,
               intent_seq: int | None = None, **data: str) -> None:
        raise NotImplementedError  # the session's

    def _record(self, voucher: Voucher, intent_seq: int, cert_der: bytes, issuer_der: bytes) -> Entry:
        """Commit the payment entry (once per voucher id); it closes the intent in the same transaction."""
        return record_payment(self.ctx.ledger, voucher, intent_seq, cert_der, issuer_der)

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
        """An intent no running charge owns and no torn tap has tied to a wallet: its terminal died after PAY."""
        if intent.wallet_id is not None or (self._intent is not None and intent.seq == self._intent.seq):
            return False
        if intent.owner == OWNER:
            with _ACTIVE_LOCK:
                return (str(self.ctx.ledger.path), intent.seq) not in _ACTIVE
        return not _owner_alive(intent.owner)

    def _resolve_intents(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo,
                         torn: Torn | None) -> dict[int, str]:
        """Settle the open intents this card can answer; return {intent seq: voucher id | void | unresolved | open}.

        Intents torn on this wallet are decided by its counter and GET LAST TRANSACTION. Orphans (a terminal that
        died after PAY) are asked with GET LAST TRANSACTION: only the card that was charged answers their challenge.
        """
        results: dict[int, str] = {}
        for intent in self.ctx.ledger.open_intents():
            own = self._intent is not None and intent.seq == self._intent.seq
            if intent.wallet_id == info.wallet_id:
                results[intent.seq] = self._resolve_torn(client, info, cert, intent, own, torn)
            elif self._is_orphan(intent):
                results[intent.seq] = self._resolve_orphan(client, info, cert, intent, torn)
        return results

    def _resolve_torn(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, intent: OpenIntent,
                      own: bool, torn: Torn | None) -> str:
        counter = intent.counter or 0
        if info.counter < counter:
            # PAY never executed on this card. This charge simply tries again; an older one is closed unpaid.
            if not own:
                self._close("void", intent.wallet_id, counter, intent.amount_fen, intent_seq=intent.seq,
                            proof=f"card counter {info.counter} never reached {counter}")
            return "open" if own else "void"
        if info.counter > counter:
            self._close("unresolved", intent.wallet_id, counter, intent.amount_fen, intent_seq=intent.seq,
                        problem=f"card has moved on to counter {info.counter}")
            return "unresolved"
        outcome = self._read_back(client, info, cert, intent, torn)
        if outcome is None:  # the card's payment with this counter answers another challenge: not ours
            if own:
                return "open"  # this charge pays again, and its intent stays open until that PAY is answered
            self._close("void", intent.wallet_id, counter, intent.amount_fen, intent_seq=intent.seq,
                        proof="the card's payment with this counter answers another challenge")
            return "void"
        return outcome

    def _resolve_orphan(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, intent: OpenIntent,
                        torn: Torn | None) -> str:
        outcome = self._read_back(client, info, cert, intent, torn)
        if outcome is not None:
            return outcome
        created = dt.datetime.fromisoformat(intent.created.replace("Z", "+00:00"))
        if clock.now() - created > ORPHAN_MAX_AGE:
            self._close("unresolved", None, None, intent.amount_fen, intent_seq=intent.seq,
                        problem="no card answered this charge's challenge within seven days")
            return "unresolved"
        return "open"

    def _read_back(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, intent: OpenIntent,
                   torn: Torn | None) -> str | None:
        """GET LAST TRANSACTION with the intent's challenge: the recorded voucher id, ``unresolved`` for a voucher
        that does not verify, or None when the card's last payment is not this intent's."""
        try:
            raw = client.last_transaction(intent.challenge)
        except CardRemoved:
            self._removed(torn)
        except CardStatusError as exc:
            if exc.status == sw.SW_REFERENCED_DATA_NOT_FOUND:
                return None
            raise Declined(Reason.CARD_ERROR, str(exc), wallet_id=info.wallet_id) from None
        except EncodingError as exc:  # an answer cut short of its status word
            raise Declined(Reason.CARD_ERROR, str(exc), wallet_id=info.wallet_id) from None
        req = PayRequest(intent.amount_fen, CNY, self.ctx.merchant_id, self.ctx.terminal_id, intent.challenge, 0)
        before = replace(info, counter=info.counter - 1, balance_fen=info.balance_fen + intent.amount_fen)
        created = dt.datetime.fromisoformat(intent.created.replace("Z", "+00:00"))
        voucher, problem = check_voucher(raw, before, cert, req, self.ctx.now_ms,
                                         since_ms=int(created.timestamp() * 1000))
        if voucher is None:
            assert problem is not None
            self._close("unresolved", intent.wallet_id or info.wallet_id, info.counter, intent.amount_fen,
                        intent_seq=intent.seq, problem=problem[1])
            return "unresolved"
        self._record(voucher, intent.seq, info.cert_der, self._issuer_der)
        if self._intent is not None and intent.seq == self._intent.seq:
            self._closed = True
        return voucher.voucher_id

