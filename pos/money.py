"""Money is integer fen (分). Parse yuan text exactly, format for people; never a float."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

from wallet.errors import InvalidInput

MAX_AMOUNT_FEN = 10**12  # ten billion yuan: far above any wallet cap, far below the 8-byte field
_YUAN_RE = re.compile(r"^(\d{1,10})(?:\.(\d{0,2}))?$", re.ASCII)


def parse_yuan(text: str | int | Decimal, *, allow_zero: bool = False) -> int:
    """Parse an amount in yuan ("12.3", "12.30", "12", 12) to fen (1230).

    Refuses negatives, more than two decimals, exponents, thousands separators and anything non-numeric with
    :class:`InvalidInput`.
    """
    if isinstance(text, bool):
        raise InvalidInput("amount must be a number of yuan")
    if isinstance(text, int):
        text = str(text)
    elif isinstance(text, Decimal):
        if not text.is_finite():
            raise InvalidInput("amount must be a finite number of yuan")
        text = format(text, "f")
    elif not isinstance(text, str):
        raise InvalidInput("amount must be a number of yuan")
    s = unicodedata.normalize("NFKC", text).strip().removeprefix("¥").strip()  # full-width digits from IMEs
    m = _YUAN_RE.match(s)
    if not m:
        raise InvalidInput(f"bad amount {text!r}: use yuan with at most two decimals, e.g. 12.30")
    fen = int(m.group(1)) * 100 + int((m.group(2) or "").ljust(2, "0"))
    if fen == 0 and not allow_zero:
        raise InvalidInput(f"bad amount {text!r}: must be more than zero")
    if fen > MAX_AMOUNT_FEN:
        raise InvalidInput(f"bad amount {text!r}: too large")
    return fen


def format_fen(fen: int, symbol: str = "¥") -> str:
    """1234 -> '¥12.34'; -50 -> '-¥0.50'."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{symbol}{fen // 100:,}.{fen % 100:02d}"


def fen_to_yuan_text(fen: int) -> str:
    """1234 -> '12.34' (no symbol, no separators; for files and JSON-adjacent text)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"
