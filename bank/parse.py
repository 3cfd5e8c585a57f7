"""The first step of settlement: each uploaded voucher decoded and checked against its uploader (no crypto yet)."""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.reasons import BAD_VOUCHER, WRONG_PAYEE, WRONG_TERMINAL
from wallet.card import china_day_text
from wallet.errors import EncodingError
from wallet.ids import voucher_id as make_voucher_id
from wallet.voucher import CNY, Voucher, VoucherBody
from wire.batch import UploadItem
from wire.claims import DiscountClaim


@dataclass(slots=True)
class Judged:
    """One uploaded voucher on its way through settlement; ``status`` stays None while nothing has decided it."""

    index: int
    vhash: str
    body: VoucherBody | None = None
    signature: bytes = b""
    body_raw: bytes = b""
    body_hash: str = ""
    tier: int = 0
    cert_der: bytes = b""
    voucher_id: str | None = None
    wallet_id: str | None = None
    amount_fen: int = 0
    timestamp_ms: int = 0
    suite: int = 0
    day: str = ""
    status: str | None = None
    reason: str | None = None
    flag: str | None = None  # review_timestamp (see bank.timerules)
    refiled: bool = False  # rejected future_timestamp before: judged again
    claim: DiscountClaim | None = None  # the terminal's discount claim (bank.claims)
    claim_signed: bool = False  # the uploading terminal's key signed the claim for this voucher
    claim_answer: dict[str, Any] | None = None

    def answer(self) -> dict[str, Any]:
        """The voucher's answer (a :class:`wire.models.VoucherAnswer` as JSON; ``flag`` and ``claim`` only when
        set)."""
        out: dict[str, Any] = {"voucher_id": self.voucher_id, "status": self.status, "reason": self.reason}
        if self.flag and self.status != "duplicate":
            out["flag"] = self.flag
        if self.claim_answer is not None:
            out["claim"] = self.claim_answer
        return out


def parse(index: int, item: UploadItem, terminal: TerminalRecord) -> Judged:
    """The voucher of ``item`` decoded; rejected here when it does not decode, names another payee or terminal, or
    is not a positive CNY amount."""
    raw = item.voucher
    vhash = sha256(raw).hexdigest()
    try:
        voucher = Voucher.decode(raw)
    except EncodingError:
        return Judged(index, vhash, status="rejected", reason=BAD_VOUCHER, day=china_day_text(now_ms()))
    b, body_raw, signature = voucher.body, voucher.body.encode(), voucher.signature
    ts = b.timestamp_ms  # within the calendar: the decoder refuses a timestamp with no day in China
    j = Judged(index, vhash, b, signature, body_raw, sha256(body_raw).hexdigest(),
               voucher_id=make_voucher_id(b.wallet_id, b.counter), wallet_id=b.wallet_id, amount_fen=b.amount_fen,
               timestamp_ms=ts, suite=b.suite, day=china_day_text(ts))
    if b.merchant_id != terminal.merchant_id:
        j.status, j.reason = "rejected", WRONG_PAYEE
    elif b.terminal_id != terminal.terminal_id:
        j.status, j.reason = "rejected", WRONG_TERMINAL
    elif b.currency != CNY or b.amount_fen <= 0:
        j.status, j.reason = "rejected", BAD_VOUCHER
    return j
