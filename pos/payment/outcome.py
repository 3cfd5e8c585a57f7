"""What a tap decided: the outcome the CLI, the UIs and the tap socket report, and the typed decline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pos.i18n import tr
from pos.money import format_fen
from pos.payment.card_client import TraceEntry
from pos.payment.reasons import Reason
from wallet.errors import EcnyError


@dataclass
class Outcome:
    """The decision on one tap."""

    status: str  # "approved" | "declined"
    amount_fen: int
    reason: Reason | None = None
    voucher_id: str | None = None
    wallet_id: str | None = None
    balance_after_fen: int | None = None
    offline_left: int | None = None  # offline payments the wallet may still make before it must go online
    detail: str = ""
    recovered: list[str] = field(default_factory=list)  # voucher ids of earlier torn payments this tap recovered
    recovered_fen: list[int] = field(default_factory=list)  # their amounts, in the same order
    pending_recovery: bool = False
    kept_voucher_id: str | None = None  # the card paid, the ledger refused the payment: kept (pos.payment.unwritten)
    torn: bool = False  # the wallet left mid-payment; this outcome came from the re-tap
    trace: list[TraceEntry] = field(default_factory=list)
    time_ms: int = 0
    elapsed_ms: float = 0.0
    discount_fen: int = 0  # an instant discount: ``amount_fen`` is the net the card pays, the gross is the sum
    campaign_id: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def message(self, lang: str = "en") -> str:
        """The decision in plain words (through :mod:`pos.i18n`): approved, or the reason and for a torn tap
        whether the wallet may have been charged; for a payment the disk refused, that the wallet was charged and the
        payment is kept."""
        if self.approved:
            return tr("outcome.approved", lang)
        assert self.reason is not None
        if self.kept_voucher_id:
            return tr("outcome.kept", lang)
        if self.reason is Reason.CARD_REMOVED:
            key = "outcome.card_removed_pending" if self.pending_recovery else "outcome.card_removed_not_charged"
            return tr(key, lang, reason=self.reason.message(lang))
        return self.reason.message(lang)

    def recovery_note(self, lang: str = "en") -> str:
        """What this tap recovered of earlier torn taps, with the amounts ("" when nothing)."""
        if not self.recovered:
            return ""
        amounts = " + ".join(format_fen(f) for f in self.recovered_fen) or "?"
        key = "outcome.recovered_one" if len(self.recovered) == 1 else "outcome.recovered_many"
        return tr(key, lang, amounts=amounts)

    def discount_note(self, lang: str = "en") -> str:
        """The instant discount in words ("" when none): "立减 ¥5.00 · 原价 ¥35.00 · 实付 ¥30.00"."""
        if not self.discount_fen:
            return ""
        return tr("discount.note", lang, discount=format_fen(self.discount_fen),
                  gross=format_fen(self.amount_fen + self.discount_fen), net=format_fen(self.amount_fen))

    def to_json(self, lang: str = "en", trace: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status, "reason": self.reason.value if self.reason else None,
            "message": self.message(lang), "voucher_id": self.voucher_id, "amount_fen": self.amount_fen,
            "balance_after_fen": self.balance_after_fen, "offline_left": self.offline_left,
            "wallet_id": self.wallet_id,
            "recovered": self.recovered, "pending_recovery": self.pending_recovery, "torn": self.torn,
        }
        if self.recovered:
            out["recovered_fen"] = self.recovered_fen
            out["recovery"] = self.recovery_note(lang)
        if self.discount_fen:
            out.update(gross_fen=self.amount_fen + self.discount_fen, discount_fen=self.discount_fen,
                       campaign_id=self.campaign_id, discount=self.discount_note(lang))
        if self.detail:
            out["detail"] = self.detail
        if self.kept_voucher_id:
            out["kept_voucher_id"] = self.kept_voucher_id
        if trace:
            out["trace"] = [t.to_json() for t in self.trace]
        return out


class Declined(EcnyError):
    """The card cannot pay here (or cannot be asked): carries the decline reason and, once known, the wallet."""

    def __init__(self, reason: Reason, detail: str = "", wallet_id: str | None = None) -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail
        self.wallet_id = wallet_id
