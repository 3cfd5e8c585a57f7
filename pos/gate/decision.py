"""The gate's answer to one tap (:class:`GateDecision`) and how it reads: open or stop, the reason in plain words
and the next step, with counts that read right ("1 place left", "only 2 places left: choose 2 tickets or fewer")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pos.i18n import tr
from pos.payment.card_client import TraceEntry
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from wallet.clock import CHINA_TZ, from_ms

# Gate-specific decision codes (payment declines use pos.payment.reasons.Reason values).
PAID = "paid"
PREPAID = "prepaid"
ANTI_PASSBACK = "anti_passback"
CAPACITY = "capacity"
ONLINE_TICKET = "online"  # admitted on a ticket sold online
TICKET_UNSEEN = "ticket_unseen"  # offline, no ticket known: one bought after the last sync cannot be seen


def places_left(n: int, lang: str) -> str:
    """"1 place left", "2 places left", "sold out" in ``lang``."""
    if n <= 0:
        return tr("gate.sold_out", lang)
    return tr("gate.places_one", lang) if n == 1 else tr("gate.places_many", lang, n=n)


@dataclass
class GateDecision:
    """The gate's answer to one tap: open or stop, why, and the day's counts after it."""

    open: bool
    code: str
    entries_today: int
    remaining: int
    wallet_id: str | None = None
    sku: str | None = None
    tickets: int = 0
    used: int = 0
    amount_fen: int = 0
    last_entry_ms: int | None = None
    window_s: int = 0
    synced_ms: int | None = None  # TICKET_UNSEEN: the gate's last ticket sync (None: never)
    outcome: Outcome | None = None
    trace: list[TraceEntry] = field(default_factory=list)
    time_ms: int = 0
    proof_failed: bool = False  # a wallet with tickets failed AUTHENTICATE: not the holder, nothing was charged

    def short(self) -> bool:
        """A capacity refusal with places left, only fewer than the ``tickets`` asked for (not sold out)."""
        return self.code == CAPACITY and 0 < self.remaining < self.tickets

    def message(self, lang: str) -> str:
        """The reason in plain words."""
        if self.code == PAID:
            return tr("gate.paid_one", lang) if self.tickets == 1 else tr("gate.paid", lang, n=self.tickets)
        if self.proof_failed and self.code == Reason.BAD_SIGNATURE.value:
            return tr("gate.proof_failed", lang)
        if self.code == PREPAID:
            return tr("gate.prepaid", lang, used=self.used, tickets=self.tickets)
        if self.code == ONLINE_TICKET:
            return tr("gate.online", lang, used=self.used, tickets=self.tickets)
        if self.code == TICKET_UNSEEN:
            when = tr("bar.never", lang) if self.synced_ms is None else \
                from_ms(self.synced_ms).astimezone(CHINA_TZ).strftime("%m-%d %H:%M")
            return tr("gate.unseen", lang, time=when)
        if self.code == ANTI_PASSBACK:
            return tr("gate.passback", lang, used=self.used, tickets=self.tickets,
                      minutes=max(1, round(self.window_s / 60)))
        if self.code == CAPACITY:
            if self.short():
                return tr("gate.short_one", lang) if self.remaining == 1 else tr("gate.short", lang, n=self.remaining)
            return tr("gate.capacity", lang)
        if self.outcome is not None:
            return self.outcome.message(lang)
        return Reason(self.code).message(lang)

    def next_step(self, lang: str) -> str:
        if self.open:
            return tr("gate.walk_through", lang)
        if self.code == ANTI_PASSBACK:
            return tr("gate.passback_next", lang)
        if self.code == TICKET_UNSEEN:
            return tr("gate.unseen_next", lang, minutes=max(1, self.window_s // 60))
        if self.proof_failed and self.code == Reason.BAD_SIGNATURE.value:
            return tr("gate.proof_failed_next", lang)
        if self.code == CAPACITY:
            if self.short():
                return (tr("gate.short_one_next", lang) if self.remaining == 1
                        else tr("gate.short_next", lang, n=self.remaining))
            return tr("gate.capacity_next", lang)
        if self.outcome is not None and self.outcome.kept_voucher_id:  # paid, not written yet (disk full)
            return tr("gate.kept_next", lang)
        return Reason(self.code).next_step(lang)

    def to_json(self, lang: str = "en") -> dict[str, Any]:
        """The shape of ``pos pay --json`` plus the gate's fields."""
        if self.outcome is not None:
            out = self.outcome.to_json(lang)
        else:
            out = {"status": "approved" if self.open else "declined", "reason": None if self.open else self.code,
                   "message": "", "voucher_id": None, "amount_fen": 0, "balance_after_fen": None,
                   "wallet_id": self.wallet_id, "recovered": [], "pending_recovery": False}
        if not self.open:
            out["status"] = "declined"
            out["reason"] = self.code
        out["message"] = self.message(lang)
        out["gate"] = {"open": self.open, "code": self.code, "sku": self.sku, "tickets": self.tickets,
                       "used": self.used, "entries_today": self.entries_today, "remaining": self.remaining,
                       "next_step": self.next_step(lang)}
        return out
