"""Decline reason codes; their words (a message and a next step, zh-CN and English) are in :mod:`pos.i18n`."""

from __future__ import annotations

from enum import StrEnum

from pos.i18n import tr
from wallet import apdu as sw


class Reason(StrEnum):
    """Why a tap was declined. The value is the stable code used in JSON, ledgers and the operator API."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    OVER_SINGLE_LIMIT = "over_single_limit"
    OVER_DAILY_LIMIT = "over_daily_limit"
    OVER_OFFLINE_LIMIT = "over_offline_limit"
    OVER_BALANCE_LIMIT = "over_balance_limit"
    EXPIRED_CERTIFICATE = "expired_certificate"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_CERTIFICATE = "bad_certificate"
    DENYLISTED = "denylisted"
    CARD_BLOCKED = "card_blocked"
    BAD_SIGNATURE = "bad_signature"
    VOUCHER_MISMATCH = "voucher_mismatch"
    REPLAYED_COUNTER = "replayed_counter"
    CARD_REMOVED = "card_removed"
    NOT_A_WALLET = "not_a_wallet"
    CARD_ERROR = "card_error"
    NO_CARD = "no_card"
    MULTIPLE_CARDS = "multiple_cards"
    CANCELLED = "cancelled"
    TERMINAL_ERROR = "terminal_error"
    CLOCK_SKEW = "clock_skew"  # the terminal's clock is off beyond clock.stop_skew_s: no offline sales

    def message(self, lang: str = "en") -> str:
        """What happened, in ``lang`` (i18n key ``reason.<code>``)."""
        return tr(f"reason.{self.value}", lang)

    def next_step(self, lang: str = "en") -> str:
        """What to do next, in ``lang`` (i18n key ``reason.<code>.next``; empty when there is nothing to do)."""
        return tr(f"reason.{self.value}.next", lang)


R = Reason

CARD_SW_REASONS: dict[int, Reason] = {
    sw.SW_INSUFFICIENT_BALANCE: R.INSUFFICIENT_BALANCE,
    sw.SW_OVER_SINGLE_LIMIT: R.OVER_SINGLE_LIMIT,
    sw.SW_OVER_DAILY_LIMIT: R.OVER_DAILY_LIMIT,
    sw.SW_OVER_OFFLINE_LIMIT: R.OVER_OFFLINE_LIMIT,
    sw.SW_OVER_BALANCE_LIMIT: R.OVER_BALANCE_LIMIT,
    sw.SW_AUTH_METHOD_BLOCKED: R.CARD_BLOCKED,
    sw.SW_FILE_NOT_FOUND: R.NOT_A_WALLET,
}


def reason_for_status(status: int) -> Reason:
    """The decline reason for a card status word."""
    return CARD_SW_REASONS.get(status, R.CARD_ERROR)
