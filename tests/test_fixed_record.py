"""Fixed-layout records (voucher bodies, PAY requests) read exactly as the generic TLV record code reads them:
valid records take the one-pass template, and any mutation gives the same value or the same refusal either way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet import tlv
from wallet.errors import EncodingError
from wallet.protocol import PAY_REQUEST_RECORD, PayRequest
from wallet.voucher import (
    BODY_FIELDS,
    BODY_RECORD,
    CNY,
    MAX_TIMESTAMP_MS,
    T_BODY,
    T_SIGNATURE,
    T_VOUCHER,
    Voucher,
    VoucherBody,
)

U32, U64 = 2**32 - 1, 2**64 - 1
digits = st.text("0123456789", min_size=16, max_size=16)
printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

bodies = st.builds(
    VoucherBody,
    wallet_id=digits,
    counter=st.integers(0, U32),
    amount_fen=st.integers(0, U64),
    currency=st.sampled_from([CNY, 0, 840, 65535]),
    merchant_id=st.text("0123456789", min_size=15, max_size=15),
    terminal_id=st.text(printable, min_size=8, max_size=8),
    challenge=st.binary(min_size=16, max_size=16),
    timestamp_ms=st.integers(0, MAX_TIMESTAMP_MS),
    balance_after_fen=st.integers(0, U64),
    suite=st.integers(0, 255),
)
signatures = st.binary(min_size=64, max_size=64)


def generic_voucher(raw: bytes) -> Voucher:
    """The reference: the generic TLV walk and record decoder, field by field."""
    items = tlv.decode(tlv.decode_one(raw, T_VOUCHER))
    if [t for t, _ in items] != [T_BODY, T_SIGNATURE]:
        raise EncodingError("voucher must hold a body and a signature")
    body = VoucherBody(**tlv.decode_record(tlv.encode(T_BODY, items[0][1]), T_BODY, BODY_FIELDS, "voucher body"))
    return Voucher(body, items[1][1])


def agree(raw: bytes) -> str:
    """``Voucher.decode`` and the reference give the same voucher and body bytes, or both refuse."""
    try:
        expected = generic_voucher(raw)
    except EncodingError:
        with pytest.raises(EncodingError):
            Voucher.decode(raw)
        return "refused"
    voucher = Voucher.decode(raw)
    assert voucher == expected
    assert voucher.body.encode() == tlv.encode_record(T_BODY, BODY_FIELDS, expected.body)
    assert voucher.encode() == raw
    return "accepted"


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "append"]), label="kind")
        at = data.draw(st.integers(0, max(0, len(out) - 1)), label="at")
        if kind == "set" and out:
            out[at] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "flip" and out:
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=3), label="bytes")
        elif kind == "delete" and out:
            del out[at]
        elif kind == "truncate":
            del out[at:]
        elif kind == "append":
            out += data.draw(st.binary(min_size=1, max_size=3), label="bytes")
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(bodies, signatures)
def test_valid_vouchers_take_the_template_and_agree(body: VoucherBody, signature: bytes) -> None:
    raw = Voucher(body, signature).encode()
    assert BODY_RECORD.unpack(body.encode()) == [getattr(body, n) for n in BODY_RECORD.names]
    assert agree(raw) == "accepted"


@settings(max_examples=500, deadline=None)
@given(bodies, signatures, st.data())
def test_mutated_vouchers_agree(body: VoucherBody, signature: bytes, data: st.DataObject) -> None:
    agree(mutate(Voucher(body, signature).encode(), data))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, U64), st.sampled_from([CNY, 1, 65535]), st.text("0123456789", min_size=15, max_size=15),
       st.text(printable, min_size=8, max_size=8), st.binary(min_size=16, max_size=16),
       st.integers(0, MAX_TIMESTAMP_MS), st.data())
def test_pay_requests_agree_with_the_generic_record(amount: int, currency: int, merchant: str, terminal: str,
                                                   challenge: bytes, ts: int, data: st.DataObject) -> None:
    req = PayRequest(amount, currency, merchant, terminal, challenge, ts)
    raw = req.encode()
    assert PAY_REQUEST_RECORD.unpack(raw) == [getattr(req, n) for n in PAY_REQUEST_RECORD.names]
    assert PayRequest.decode(raw) == req
    mutated = mutate(raw, data)
    try:
        expected = tlv.decode_record(mutated, PAY_REQUEST_RECORD.tag, PAY_REQUEST_RECORD.fields, "PAY request")
    except EncodingError:
        assert PAY_REQUEST_RECORD.unpack(mutated) is None
        with pytest.raises(EncodingError):
            PayRequest.decode(mutated)
    else:
        assert PayRequest.decode(mutated) == PayRequest(**expected)


@pytest.mark.parametrize("text, value", [
    (b"0991000000000008", ord("x")),  # a wallet id digit that is not a digit
    (b"0991000000000008", 0xB2),      # ... nor ASCII
    (b"CMGQ0001", 0x7F),              # a terminal id character that is not printable
    (b"CMGQ0001", 0xC3),              # ... nor ASCII
])
def test_text_fields_checked_like_the_generic_decoder(text: bytes, value: int) -> None:
    body = VoucherBody("0991000000000008", 7, 1230, CNY, "320508000000101", "CMGQ0001", b"\1" * 16,
                       1_790_000_000_000, 98_770)
    raw = bytearray(Voucher(body, b"\2" * 64).encode())
    raw[raw.index(text) + 1] = value
    assert BODY_RECORD.unpack(bytes(raw[3:3 + BODY_RECORD.size])) is None
    assert agree(bytes(raw)) == "refused"


def test_a_timestamp_past_the_calendar_is_refused_both_ways() -> None:
    body = VoucherBody("0" * 16, 1, 1, CNY, "0" * 15, "TERM0001", b"\0" * 16, MAX_TIMESTAMP_MS + 1, 0)
    assert agree(Voucher(body, b"\0" * 64).encode()) == "refused"


def test_a_record_with_a_variable_or_optional_field_has_no_template() -> None:
    with pytest.raises(ValueError, match="fixed-size"):
        tlv.FixedRecord(0xBF30, [tlv.Field(0xDF30, "cert", "bytes")], "info")
    with pytest.raises(ValueError, match="fixed-size"):
        tlv.FixedRecord(0xBF30, [tlv.Field(0xDF40, "limit", "uint", 8, optional=True)], "info")
