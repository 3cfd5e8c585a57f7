"""The operator's fast voucher decoder agrees with ``Voucher.decode`` on valid and on mutated vouchers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank.fastpath import _fast, decode_voucher
from wallet.errors import EncodingError
from wallet.voucher import CNY, MAX_TIMESTAMP_MS, Voucher, VoucherBody

U32, U64 = 2**32 - 1, 2**64 - 1

bodies = st.builds(
    VoucherBody,
    wallet_id=st.text("0123456789", min_size=16, max_size=16),
    counter=st.integers(0, U32),
    amount_fen=st.integers(0, U64),
    currency=st.sampled_from([CNY, 0, 840, 65535]),
    merchant_id=st.text("0123456789", min_size=15, max_size=15),
    terminal_id=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=8),
    challenge=st.binary(min_size=16, max_size=16),
    timestamp_ms=st.integers(0, MAX_TIMESTAMP_MS),
    balance_after_fen=st.integers(0, U64),
    suite=st.integers(0, 255),
)
signatures = st.binary(min_size=64, max_size=64)


def _encode(body: VoucherBody, signature: bytes) -> bytes:
    return Voucher(body, signature).encode()


def _agree(raw: bytes) -> str:
    """Both decoders give the same voucher and body bytes, or both raise EncodingError; which one it was."""
    try:
        expected = Voucher.decode(raw)
    except EncodingError:
        with pytest.raises(EncodingError):
            decode_voucher(raw)
        return "refused"
    voucher, body_raw = decode_voucher(raw)
    assert voucher == expected
    assert body_raw == expected.body.encode()
    assert raw == expected.encode()
    return "accepted"


@settings(max_examples=300, deadline=None)
@given(bodies, signatures)
def test_valid_vouchers_take_the_fast_path_and_agree(body: VoucherBody, signature: bytes) -> None:
    raw = _encode(body, signature)
    fast = _fast(raw)
    assert fast is not None
    assert fast == (body, signature)
    assert _agree(raw) == "accepted"


@settings(max_examples=500, deadline=None)
@given(bodies, signatures, st.data())
def test_mutated_vouchers_agree(body: VoucherBody, signature: bytes, data: st.DataObject) -> None:
    raw = bytearray(_encode(body, signature))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "append"]), label="kind")
        at = data.draw(st.integers(0, max(0, len(raw) - 1)), label="at")
        if kind == "set" and raw:
            raw[at] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=3), label="bytes")
        elif kind == "delete" and raw:
            del raw[at]
        elif kind == "truncate":
            del raw[at:]
        elif kind == "append":
            raw += data.draw(st.binary(min_size=1, max_size=3), label="bytes")
    _agree(bytes(raw))


@pytest.mark.parametrize("text, value", [
    (b"0991000000000008", ord("x")),  # a wallet id digit that is not a digit
    (b"0991000000000008", 0xB2),      # ... nor ASCII
    (b"CMGQ0001", 0x7F),              # a terminal id character that is not printable
    (b"CMGQ0001", 0xC3),              # ... nor ASCII
])
def test_text_fields_checked_like_the_generic_decoder(text: bytes, value: int) -> None:
    body = VoucherBody("0991000000000008", 7, 1230, CNY, "320508000000101", "CMGQ0001", b"\1" * 16,
                       1_790_000_000_000, 98_770)
    raw = bytearray(_encode(body, b"\2" * 64))
    raw[raw.index(text) + 1] = value
    assert _fast(bytes(raw)) is None
    assert _agree(bytes(raw)) == "refused"


def test_a_timestamp_past_the_calendar_is_refused_by_both() -> None:
    body = VoucherBody("0" * 16, 1, 1, CNY, "0" * 15, "TERM0001", b"\0" * 16, MAX_TIMESTAMP_MS + 1, 0)
    assert _agree(_encode(body, b"\0" * 64)) == "refused"
