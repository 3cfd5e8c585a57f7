"""Identifiers: 16-digit wallet ids (Luhn-checked), 15-digit merchant ids, 8-character terminal ids, voucher ids."""

from __future__ import annotations

import re
import secrets

from wallet.errors import InvalidInput

WALLET_PREFIX = "0991"  # the demo operator's wallet id range
_WALLET_RE = re.compile(r"^\d{16}$")
_TERMINAL_RE = re.compile(r"^[A-Z0-9]{8}$")


def luhn_digit(digits: str) -> str:
    """The Luhn check digit for ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def new_wallet_id(prefix: str = WALLET_PREFIX) -> str:
    """A fresh random 16-digit wallet id with a Luhn check digit."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + luhn_digit(body)


def check_wallet_id(value: str) -> str:
    """Return ``value`` if it is a well-formed wallet id, else raise :class:`InvalidInput`."""
    if not _WALLET_RE.match(value) or luhn_digit(value[:-1]) != value[-1]:
        raise InvalidInput(f"wallet id {value!r} must be 16 digits with a valid check digit")
    return value


def check_terminal_id(value: str) -> str:
    if not _TERMINAL_RE.match(value):
        raise InvalidInput(f"terminal id {value!r} must be 8 characters, A-Z and 0-9")
    return value


def voucher_id(wallet_id: str, counter: int) -> str:
    """The voucher id of a wallet's ``counter``-th payment: the same payment has the same id everywhere."""
    return f"{wallet_id}-{counter:08d}"


_VOUCHER_ID_RE = re.compile(r"^(\d{16})-(\d{8,10})$")


def parse_voucher_id(value: str) -> tuple[str, int] | None:
    """The wallet id and counter a voucher id is made of, or None for anything :func:`voucher_id` does not make."""
    m = _VOUCHER_ID_RE.match(value)
    if m is None:
        return None
    wallet, counter = m[1], int(m[2])
    return (wallet, counter) if counter <= 0xFFFFFFFF and voucher_id(wallet, counter) == value else None


def mask_wallet_id(wallet_id: str) -> str:
    """Wallet id as shown on screens and receipts: first 4 and last 4 digits."""
    return f"{wallet_id[:4]} **** **** {wallet_id[-4:]}"
