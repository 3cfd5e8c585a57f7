"""One tap, driven end to end: read and verify the card, check limits, PAY, verify the voucher, commit, answer.

The terminal writes an ``intent`` entry to its ledger before it sends PAY. If the card leaves the field before the
voucher is back (a torn tap) or the terminal dies, the intent survives; when that wallet is next in the field, GET
LAST TRANSACTION with the intent's challenge either recovers the voucher (recorded once, as the payment) or proves
the card was not charged (a ``void`` entry). An approval is reported only after its payment entry is committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ecny_nfc.reader import Cancelled, CardConnection, CardRemoved, MultipleCards, NoCard, Reader, ReaderError
from pos.card_client import CardStatusError, TraceEntry, WalletClient
from pos.ledger import Entry, Ledger
from pos.reasons import Reason, reason_for_status
from pos.risk import check_limits
from wallet import apdu as sw
from wallet.certs import WalletCertInfo, verify_wallet_certificate
from wallet.errors import CertificateError, EncodingError, SignatureError
from wallet.limits import OfflineCaps
from wallet.protocol import STATUS_ACTIVE, CardInfo, PayRequest
from wallet.voucher import CNY, Voucher

MAX_TAPS = 5


@dataclass
class TerminalContext:
    """What a terminal knows: who it is, whom it trusts, its ledger and its offline caps."""

    merchant_id: str
    terminal_id: str
    roots: tuple[bytes, ...]
    ledger: Ledger
    caps: OfflineCaps = field(default_factory=OfflineCaps)
    recovery_timeout: float = 10.0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class Outcome:
    """The decision on one tap."""

    status: str  # "approved" | "declined"
    amount_fen: int
    reason: Reason | None = None
    voucher_id: str | None = None
    wallet_id: str | None = None
    balance_after_fen: int | None = None
    detail: str = ""
    recovered: list[str] = field(default_factory=list)
    pending_recovery: bool = False
    torn: bool = False  # the wallet left mid-payment; this outcome came from the re-tap
    trace: list[TraceEntry] = field(default_factory=list)
    time_ms: int = 0
    elapsed_ms: float = 0.0

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def message(self, lang: str = "en") -> str:
        if self.approved:
            return "支付成功" if lang.startswith("zh") else "approved"
        assert self.reason is not None
        msg = self.reason.message(lang)
        if self.reason is Reason.CARD_REMOVED:
            if self.pending_recovery:
                msg += ("：可能已扣款，请将同一钱包再碰一次以完成" if lang.startswith("zh")
                        else ": the wallet may have been charged; tap the same wallet again to finish")
            else:
                msg += "：未扣款" if lang.startswith("zh") else ": the wallet was not charged"
        return msg

    def to_json(self, lang: str = "en", trace: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status, "reason": self.reason.value if self.reason else None,
            "message": self.message(lang), "voucher_id": self.voucher_id, "amount_fen": self.amount_fen,
            "balance_after_fen": self.balance_after_fen, "wallet_id": self.wallet_id,
            "recovered": self.recovered, "pending_recovery": self.pending_recovery, "torn": self.torn,
        }
        if self.detail:
            out["detail"] = self.detail
        if trace:
            out["trace"] = [t.to_json() for t in self.trace]
        return out


class _Torn(Exception):
    """The card left the field while an intent was open."""

    def __init__(self, intent: Entry) -> None:
        self.intent = intent


class _Decline(Exception):
    def __init__(self, reason: Reason, detail: str = "", wallet_id: str | None = None) -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail
        self.wallet_id = wallet_id


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class PaymentSession:
    """Takes one payment through a reader."""

    def __init__(self, ctx: TerminalContext, reader: Reader) -> None:
        self.ctx = ctx
        self.reader = reader
        self.trace: list[TraceEntry] = []
        self._torn_seen = False

    # -- public -----------------------------------------------------------------------------------------------------
    def pay(self, amount_fen: int, timeout: float | None = 30.0, cancel: threading.Event | None = None) -> Outcome:
        """Wait for a card and take ``amount_fen`` from it. Never raises for anything a card or reader does."""
        t0 = time.perf_counter()
        outcome = self._pay(amount_fen, timeout, cancel)
        outcome.torn = outcome.torn or self._torn_seen
        outcome.trace = self.trace
        outcome.time_ms = self.ctx.now_ms()
        outcome.elapsed_ms = (time.perf_counter() - t0) * 1e3
        return outcome

    # -- the flow ---------------------------------------------------------------------------------------------------
    def _pay(self, amount_fen: int, timeout: float | None, cancel: threading.Event | None) -> Outcome:
        if amount_fen <= 0:
            raise ValueError("amount must be positive")
        torn: Entry | None = None
        wait = timeout
        for _ in range(MAX_TAPS):
            try:
                conn = self.reader.connect(timeout=wait, cancel=cancel)
            except (NoCard, Cancelled) as exc:
                if torn is not None:
                    return Outcome("declined", amount_fen, Reason.CARD_REMOVED, wallet_id=torn.wallet_id,
                                   pending_recovery=True, detail="the wallet did not come back in time")
                reason = Reason.CANCELLED if isinstance(exc, Cancelled) else Reason.NO_CARD
                return Outcome("declined", amount_fen, reason)
            except MultipleCards as exc:
                return Outcome("declined", amount_fen, Reason.MULTIPLE_CARDS, detail=str(exc))
            except ReaderError as exc:
                return Outcome("declined", amount_fen, Reason.TERMINAL_ERROR, detail=str(exc),
                               wallet_id=torn.wallet_id if torn else None, pending_recovery=torn is not None)
            try:
                return self._tap(conn, amount_fen, torn)
            except _Torn as exc:
                torn = exc.intent
                self._torn_seen = True
                wait = self.ctx.recovery_timeout
                if wait <= 0:
                    return Outcome("declined", amount_fen, Reason.CARD_REMOVED, wallet_id=torn.wallet_id,
                                   pending_recovery=True)
            except _Decline as exc:
                return Outcome("declined", amount_fen, exc.reason, detail=exc.detail,
                               wallet_id=exc.wallet_id, pending_recovery=torn is not None and
                               bool(self.ctx.ledger.open_intents(torn.wallet_id)))
            finally:
                conn.release()
        assert torn is not None
        return Outcome("declined", amount_fen, Reason.CARD_REMOVED, wallet_id=torn.wallet_id, pending_recovery=True,
                       detail="too many attempts")

    def _tap(self, conn: CardConnection, amount_fen: int, torn: Entry | None) -> Outcome:
        client = WalletClient(conn, self.trace)
        now_ms = self.ctx.now_ms()
        try:
            client.select()
        except CardStatusError as exc:
            raise _Decline(Reason.NOT_A_WALLET if exc.status == sw.SW_FILE_NOT_FOUND else Reason.CARD_ERROR,
                           str(exc)) from None
        except CardRemoved:
            self._torn_or_removed(torn)
        info, cert = self._read_and_verify(client, now_ms, torn)
        wid = info.wallet_id
        if torn is not None and wid != torn.wallet_id:
            raise _Decline(Reason.CARD_REMOVED, "a different wallet was tapped; tap the wallet that was removed",
                           wallet_id=torn.wallet_id)
        results = self._resolve_intents(client, info, cert, torn)
        recovered = [v for seq, v in results.items() if v not in ("void", "unresolved") and
                     (torn is None or seq != torn.seq)]
        if torn is not None:
            result = results.get(torn.seq)
            if result == "unresolved":
                raise _Decline(Reason.CARD_ERROR, "the removed wallet's payment could not be confirmed",
                               wallet_id=wid)
            if result not in (None, "void"):
                return Outcome("approved", amount_fen, voucher_id=result, wallet_id=wid,
                               balance_after_fen=info.balance_fen, recovered=recovered)
        if self.ctx.ledger.is_denylisted(wid):
            raise _Decline(Reason.DENYLISTED, wallet_id=wid)
        if info.status != STATUS_ACTIVE:
            raise _Decline(Reason.CARD_BLOCKED, wallet_id=wid)
        seen = self.ctx.ledger.max_counter(wid)
        if seen > info.counter:
            raise _Decline(Reason.REPLAYED_COUNTER, f"card counter {info.counter}, this terminal has seen {seen}",
                           wallet_id=wid)
        limit = check_limits(info, cert.tier, amount_fen, self.ctx.caps, now_ms)
        if limit is not None:
            raise _Decline(limit, wallet_id=wid)
        return self._charge(client, info, cert, amount_fen, now_ms, recovered)

    def _torn_or_removed(self, torn: Entry | None) -> None:
        if torn is not None:
            raise _Torn(torn)
        raise _Decline(Reason.CARD_REMOVED, "the wallet left the field before it was asked to pay")

    def _read_and_verify(self, client: WalletClient, now_ms: int,
                         torn: Entry | None) -> tuple[CardInfo, WalletCertInfo]:
        try:
            info = client.read_info()
        except CardRemoved:
            self._torn_or_removed(torn)
            raise  # unreachable: _torn_or_removed always raises
        except CardStatusError as exc:
            raise _Decline(Reason.CARD_ERROR, str(exc)) from None
        except EncodingError as exc:
            raise _Decline(Reason.CARD_ERROR, f"wallet info does not parse: {exc}") from None
        at = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        try:
            cert = verify_wallet_certificate(info.cert_der, (info.issuer_der,), self.ctx.roots, at)
        except CertificateError as exc:
            raise _Decline(Reason(exc.reason), str(exc), wallet_id=info.wallet_id) from None
        if cert.wallet_id != info.wallet_id or cert.tier != info.tier:
            raise _Decline(Reason.BAD_CERTIFICATE, "the certificate names another wallet or tier",
                           wallet_id=info.wallet_id)
        return info, cert

    def _charge(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo, amount_fen: int, now_ms: int,
                recovered: list[str]) -> Outcome:
        ledger = self.ctx.ledger
        req = PayRequest(amount_fen, CNY, self.ctx.merchant_id, self.ctx.terminal_id, secrets.token_bytes(16), now_ms)
        intent = ledger.append("intent", wallet_id=info.wallet_id, counter=info.counter + 1, amount_fen=amount_fen,
                               data={"challenge": req.challenge.hex(), "timestamp_ms": now_ms})
        try:
            raw = client.pay(req)
        except CardRemoved:
            raise _Torn(intent) from None
        except CardStatusError as exc:
            ledger.append("void", wallet_id=info.wallet_id, counter=intent.counter, amount_fen=amount_fen,
                          data={"intent": intent.seq, "proof": f"card refused PAY with {exc.status:04X}"})
            raise _Decline(reason_for_status(exc.status), str(exc), wallet_id=info.wallet_id) from None
        voucher, problem = self._check_voucher(raw, info, cert, req)
        if problem is not None:
            # A damaged answer in transit is common on the air: read the card's stored voucher once more.
            try:
                voucher, problem2 = self._check_voucher(client.last_transaction(req.challenge), info, cert, req)
            except CardRemoved:
                raise _Torn(intent) from None
            except CardStatusError:
                problem2 = problem
            if problem2 is not None:
                ledger.append("unresolved", wallet_id=info.wallet_id, counter=intent.counter, amount_fen=amount_fen,
                              data={"intent": intent.seq, "problem": problem2[1]})
                raise _Decline(problem2[0], problem2[1], wallet_id=info.wallet_id)
        assert voucher is not None
        self._record(voucher, intent, cert_der=info.cert_der, issuer_der=info.issuer_der)
        return Outcome("approved", amount_fen, voucher_id=voucher.voucher_id, wallet_id=info.wallet_id,
                       balance_after_fen=voucher.body.balance_after_fen, recovered=recovered)

    def _check_voucher(self, raw: bytes, info: CardInfo, cert: WalletCertInfo,
                       req: PayRequest) -> tuple[Voucher | None, tuple[Reason, str] | None]:
        try:
            voucher = Voucher.decode(raw)
        except EncodingError as exc:
            return None, (Reason.BAD_SIGNATURE, f"voucher does not parse: {exc}")
        try:
            voucher.verify(cert.public_key)
        except SignatureError as exc:
            return None, (Reason.BAD_SIGNATURE, str(exc))
        b = voucher.body
        expected = {
            "wallet_id": info.wallet_id, "counter": info.counter + 1, "amount_fen": req.amount_fen,
            "currency": req.currency, "merchant_id": req.merchant_id, "terminal_id": req.terminal_id,
            "challenge": req.challenge, "timestamp_ms": req.timestamp_ms,
            "balance_after_fen": info.balance_fen - req.amount_fen,
        }
        for name, want in expected.items():
            if getattr(b, name) != want:
                return None, (Reason.VOUCHER_MISMATCH, f"voucher {name} is {getattr(b, name)!r}, expected {want!r}")
        return voucher, None

    def _record(self, voucher: Voucher, intent: Entry, cert_der: bytes, issuer_der: bytes) -> Entry:
        """Commit the payment entry (once per voucher id)."""
        ledger = self.ctx.ledger
        fp = _fingerprint(cert_der)
        ledger.begin()
        try:
            existing = ledger.payment(voucher.voucher_id)
            if existing is not None:
                ledger.rollback()
                if existing.data.get("body") != voucher.body.encode().hex():
                    raise _Decline(Reason.REPLAYED_COUNTER, "another voucher with this counter is recorded",
                                   wallet_id=voucher.body.wallet_id)
                return existing
            ledger.add_certificate(fp, cert_der)
            ledger.add_certificate(_fingerprint(issuer_der), issuer_der)
            entry = ledger._append(
                "payment", voucher_id=voucher.voucher_id, wallet_id=voucher.body.wallet_id,
                counter=voucher.body.counter, amount_fen=voucher.body.amount_fen,
                data={"intent": intent.seq, "voucher": voucher.encode().hex(), "body": voucher.body.encode().hex(),
                      "cert": fp, "issuer": _fingerprint(issuer_der),
                      "merchant_id": voucher.body.merchant_id, "terminal_id": voucher.body.terminal_id,
                      "balance_after_fen": voucher.body.balance_after_fen})
            ledger.commit()
        except BaseException:
            ledger.rollback()
            raise
        return entry

    def _resolve_intents(self, client: WalletClient, info: CardInfo, cert: WalletCertInfo,
                         torn: Entry | None) -> dict[int, str]:
        """Settle this wallet's open intents at this terminal; return {intent seq: resolving entry kind}."""
        ledger = self.ctx.ledger
        results: dict[int, str] = {}
        for intent in ledger.open_intents(info.wallet_id):
            counter = intent.counter or 0
            base = {"intent": intent.seq}
            results[intent.seq] = "unresolved"
            if info.counter < counter:
                results[intent.seq] = "void"
                ledger.append("void", wallet_id=intent.wallet_id, counter=counter, amount_fen=intent.amount_fen,
                              data={**base, "proof": f"card counter {info.counter} never reached {counter}"})
                continue
            if info.counter > counter:
                ledger.append("unresolved", wallet_id=intent.wallet_id, counter=counter,
                              amount_fen=intent.amount_fen,
                              data={**base, "problem": f"card has moved on to counter {info.counter}"})
                continue
            challenge = bytes.fromhex(intent.data["challenge"])
            try:
                raw = client.last_transaction(challenge)
            except CardRemoved:
                self._torn_or_removed(torn)
            except CardStatusError as exc:
                if exc.status == sw.SW_REFERENCED_DATA_NOT_FOUND:
                    results[intent.seq] = "void"
                    ledger.append("void", wallet_id=intent.wallet_id, counter=counter, amount_fen=intent.amount_fen,
                                  data={**base, "proof": "the card's payment with this counter answers another "
                                                         "challenge"})
                    continue
                raise _Decline(Reason.CARD_ERROR, str(exc), wallet_id=info.wallet_id) from None
            req = PayRequest(intent.amount_fen, CNY, self.ctx.merchant_id, self.ctx.terminal_id, challenge,
                             int(intent.data["timestamp_ms"]))
            before = replace(info, counter=counter - 1, balance_fen=info.balance_fen + intent.amount_fen)
            voucher, problem = self._check_voucher(raw, before, cert, req)
            if voucher is None:
                assert problem is not None
                ledger.append("unresolved", wallet_id=intent.wallet_id, counter=counter,
                              amount_fen=intent.amount_fen, data={**base, "problem": problem[1]})
                continue
            self._record(voucher, intent, info.cert_der, info.issuer_der)
            results[intent.seq] = voucher.voucher_id
        return results
