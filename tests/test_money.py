"""Money is integer fen: exact parsing of yuan text, clear errors, formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos.money import fen_to_yuan_text, format_fen, parse_yuan
from wallet.errors import InvalidInput


@pytest.mark.parametrize(("text", "fen"), [
    ("12.3", 1230), ("12.30", 1230), ("12", 1200), ("0.01", 1), ("¥8.80", 880), (" 5 ", 500), ("12.", 1200),
    (7, 700), (Decimal("59.90"), 5990), ("１２．５", 1250), ("￥3", 300),
])
def test_parse(text, fen) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", ["", "-1", "1.234", "1e3", "1,000", "abc", "nan", "inf", "0", "0.00", "١٢",
                                  "99999999999", 1.5, True, None])
def test_reject(text) -> None:
    with pytest.raises(InvalidInput):
        parse_yuan(text)


@given(st.integers(min_value=1, max_value=10**11))
def test_format_parse_round_trip(fen: int) -> None:
    assert parse_yuan(fen_to_yuan_text(fen)) == fen


def test_format() -> None:
    assert format_fen(1234) == "¥12.34"
    assert format_fen(123456789) == "¥1,234,567.89"
    assert format_fen(-50) == "-¥0.50"
    assert format_fen(0) == "¥0.00"
