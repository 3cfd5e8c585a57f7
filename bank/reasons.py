"""Reason codes of the operator's settlement answers (besides the certificate codes shared with terminals)."""

from __future__ import annotations

DOUBLE_SPEND = "double_spend"
BAD_VOUCHER = "bad_voucher"
BAD_SIGNATURE = "bad_signature"
WRONG_PAYEE = "wrong_payee"
WRONG_TERMINAL = "wrong_terminal"
WALLET_MISMATCH = "wallet_mismatch"
FUTURE_TIMESTAMP = "future_timestamp"
OVER_SINGLE_LIMIT = "over_single_limit"
OVER_DAILY_LIMIT = "over_daily_limit"
OVER_OFFLINE_LIMIT = "over_offline_limit"
WALLET_REVOKED = "wallet_revoked"  # taken after the terminal had the denylist version that revoked the wallet
