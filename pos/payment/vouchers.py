"""A voucher the terminal received: checked against the PAY it answers, then recorded once per voucher id."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

from pos.ledger import Entry, Ledger, PaymentRecorded
from pos.payment.outcome import Declined
from pos.payment.reasons import Reason
from wallet.certs import WalletCertInfo
from wallet.errors import EncodingError, SignatureError, StorageError
from wallet.protocol import CardInfo, PayRequest
from wallet.voucher import CNY, Voucher

CLOCK_SKEW_MS = 5 * 60 * 1000

Problem = tuple[Reason, str]


class PaymentNotWritten(Declined):
    """The card paid and its voucher verified, but the ledger refused the payment entry (disk full, I/O error):
    ``terminal_error``, the charge ``pending_recovery``; the voucher is kept (:mod:`pos.payment.unwritten`)."""


def _signed_voucher(raw: bytes, cert: WalletCertInfo) -> tuple[Voucher | None, Problem | None]:
    """The voucher in ``raw`` if it parses and the card's certified key signed it, else why not."""
    try:
        voucher = Voucher.decode(raw)
    except EncodingError as exc:
        return None, (Reason.BAD_SIGNATURE, f"voucher does not parse: {exc}")
    try:
        voucher.verify(cert.public_key)
    except SignatureError as exc:
        return None, (Reason.BAD_SIGNATURE, str(exc))
    return voucher, None

def check_voucher(raw: bytes, info: CardInfo, cert: WalletCertInfo, req: PayRequest, now_ms: Callable[[], int],
                  since_ms: int | None = None) -> tuple[Voucher | None, Problem | None]:
    """Verify a voucher against the request (``info`` is the card as it was before PAY): the voucher, or why not.

    With ``since_ms`` (recovery), the PAY's timestamp is unknown and must only fall between the charge's start and
    now (``now_ms``), give or take the clock skew."""
    voucher, problem = _signed_voucher(raw, cert)
    if voucher is None:
        return None, problem
    b = voucher.body
    expected = {
        "wallet_id": info.wallet_id, "counter": info.counter + 1, "amount_fen": req.amount_fen,
        "currency": req.currency, "merchant_id": req.merchant_id, "terminal_id": req.terminal_id,
        "challenge": req.challenge, "balance_after_fen": info.balance_fen - req.amount_fen,
    }
    if since_ms is None:
        expected["timestamp_ms"] = req.timestamp_ms
    elif not since_ms - CLOCK_SKEW_MS <= b.timestamp_ms <= now_ms() + CLOCK_SKEW_MS:
        return None, (Reason.VOUCHER_MISMATCH, "voucher timestamp outside the charge's time")
    for name, want in expected.items():
        if getattr(b, name) != want:
            return None, (Reason.VOUCHER_MISMATCH, f"voucher {name} is {getattr(b, name)!r}, expected {want!r}")
    return voucher, None


def check_recovered(raw: bytes, info: CardInfo, cert: WalletCertInfo, amount_fen: int, merchant_id: str,
                    terminal_id: str, challenge: bytes, since_ms: int, now_ms: int,
                    counter: int | None = None) -> tuple[Voucher | None, Problem | None]:
    """Verify a voucher read back from the card's log for an open charge: signed by this card, for this wallet,
    amount, merchant, terminal and challenge, at a counter the card has reached (``counter`` exactly, when a torn
    tap or a pay-sent mark named it), and timed between the charge's start and now, give or take the clock skew.
    Its balance after is the card's signed word for it: the card may have paid since."""
    voucher, problem = _signed_voucher(raw, cert)
    if voucher is None:
        return None, problem
    b = voucher.body
    expected = {"wallet_id": info.wallet_id, "amount_fen": amount_fen, "currency": CNY, "merchant_id": merchant_id,
                "terminal_id": terminal_id, "challenge": challenge}
    if counter is not None:
        expected["counter"] = counter
    for name, want in expected.items():
        if getattr(b, name) != want:
            return None, (Reason.VOUCHER_MISMATCH, f"voucher {name} is {getattr(b, name)!r}, expected {want!r}")
    if not 1 <= b.counter <= info.counter:
        return None, (Reason.VOUCHER_MISMATCH, f"voucher counter {b.counter} is past the card's {info.counter}")
    if not since_ms - CLOCK_SKEW_MS <= b.timestamp_ms <= now_ms + CLOCK_SKEW_MS:
        return None, (Reason.VOUCHER_MISMATCH, "voucher timestamp outside the charge's time")
    return voucher, None


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def record_payment(ledger: Ledger, voucher: Voucher, intent_seq: int, cert_der: bytes, issuer_der: bytes,
                   discount: dict[str, Any] | None = None) -> Entry:
    """Commit the payment entry with the card's and issuer's certificates (once per voucher id), and the instant
    ``discount`` its charge gave (``data.discount``); it closes the intent in the same transaction. The same voucher
    again returns its entry; another voucher with the same voucher id is a replayed counter (:class:`Declined`). A
    ledger that cannot be written (disk full, I/O error) raises :class:`PaymentNotWritten` (``terminal_error``): the
    card has paid and keeps the voucher in its log, the intent stays open, so the charge reports
    ``pending_recovery``; the terminal keeps the voucher in memory and writes it when the disk allows
    (:mod:`pos.payment.unwritten`), else the card's next tap here records it."""
    fp, issuer_fp = fingerprint(cert_der), fingerprint(issuer_der)
    b = voucher.body
    data = {"intent": intent_seq, "voucher": voucher.encode().hex(), "cert": fp, "issuer": issuer_fp,
            "merchant_id": b.merchant_id, "terminal_id": b.terminal_id, "balance_after_fen": b.balance_after_fen}
    if discount:
        data["discount"] = discount
    try:
        with ledger.transaction() as tx:
            tx.add_certificate(fp, cert_der)
            tx.add_certificate(issuer_fp, issuer_der)
            return tx.append("payment", voucher_id=voucher.voucher_id, wallet_id=b.wallet_id, counter=b.counter,
                             amount_fen=b.amount_fen, data=data)
    except (sqlite3.Error, OSError, StorageError) as exc:
        raise PaymentNotWritten(Reason.TERMINAL_ERROR, f"the payment {voucher.voucher_id} could not be written to "
                                f"the ledger ({exc}); the card has paid: the voucher is kept and written once the "
                                "disk allows, and the card's transaction log holds it for its next tap here",
                                wallet_id=b.wallet_id) from None
    except PaymentRecorded:
        existing = ledger.payment(voucher.voucher_id)
        if existing is None:
            raise
        if Voucher.decode(bytes.fromhex(existing.data["voucher"])).body != b:
            raise Declined(Reason.REPLAYED_COUNTER, "another voucher with this counter is recorded",
                           wallet_id=b.wallet_id) from None
        return existing
