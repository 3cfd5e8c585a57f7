"""A fast, equivalent decoder for the operator's hot path: canonical vouchers have one fixed layout.

Every field of a voucher body has a fixed size, so a canonical voucher with a 64-byte signature is one template of
tag and length bytes with values at fixed offsets. :func:`decode_voucher` reads the whole voucher with one
:class:`struct.Struct` (structure bytes, values and signature), checks the structure bytes against the template in
one comparison and the text fields with the same rules as :meth:`wallet.voucher.Voucher.decode`, without the generic
TLV walk and the two re-encodings. Anything that does not match the template, or a text field that does not pass,
goes through ``Voucher.decode`` itself, so the result (or the :class:`EncodingError`) is the same either way.
"""

from __future__ import annotations

import operator
import struct

from wallet import tlv
from wallet.voucher import BODY_FIELDS, MAX_TIMESTAMP_MS, T_BODY, T_SIGNATURE, T_VOUCHER, Voucher, VoucherBody

SIGNATURE_SIZE = 64
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _layout() -> tuple[struct.Struct, tuple[bytes, ...], operator.itemgetter, list[tuple[int, str, str]], int,
                       tuple[int, int], int]:
    """The template's struct, its structure pieces and where to find each value in the unpacked tuple."""
    for f in BODY_FIELDS:
        assert f.size is not None, "the fast path needs fixed-size fields"
    body_value = b"".join(tlv.encode(f.tag, b"\0" * f.size) for f in BODY_FIELDS)  # type: ignore[operator]
    body_tlv = tlv.encode(T_BODY, body_value)
    sig_tlv = tlv.encode(T_SIGNATURE, b"\0" * SIGNATURE_SIZE)
    template = tlv.encode(T_VOUCHER, body_tlv + sig_tlv)
    body_start = len(template) - len(body_tlv) - len(sig_tlv)
    codes: list[str] = []
    structure: list[bytes] = []
    structure_at: list[int] = []
    fields: list[tuple[int, str, str]] = []  # (index in the unpacked tuple, name, kind)

    def piece(code: str, fixed: bytes | None = None) -> int:
        codes.append(code)
        if fixed is not None:
            structure.append(fixed)
            structure_at.append(len(codes) - 1)
        return len(codes) - 1

    head = tlv.encode_tag(T_VOUCHER) + tlv.encode_length(len(body_tlv) + len(sig_tlv))
    head += tlv.encode_tag(T_BODY) + tlv.encode_length(len(body_value))
    for f in BODY_FIELDS:
        head += tlv.encode_tag(f.tag) + tlv.encode_length(f.size)  # type: ignore[arg-type]
        piece(f"{len(head)}s", head)
        head = b""
        if f.kind == "uint" and f.size in _UINT_CODES:
            fields.append((piece(_UINT_CODES[f.size]), f.name, "int"))  # type: ignore[index]
        else:
            fields.append((piece(f"{f.size}s"), f.name, f.kind))
    sig_head = tlv.encode_tag(T_SIGNATURE) + tlv.encode_length(SIGNATURE_SIZE)
    piece(f"{len(sig_head)}s", sig_head)
    sig_index = piece(f"{SIGNATURE_SIZE}s")
    layout = struct.Struct(">" + "".join(codes))
    assert layout.size == len(template)
    sig_start = len(template) - SIGNATURE_SIZE
    return (layout, tuple(structure), operator.itemgetter(*structure_at), fields, sig_index,
            (body_start, body_start + len(body_tlv)), sig_start)


_STRUCT, _STRUCTURE, _STRUCTURE_OF, _FIELDS, _SIG_INDEX, _BODY, _SIG = _layout()
# VoucherBody is a plain frozen dataclass (no __post_init__, no slots): filling its __dict__ directly makes the same
# object as calling it, without one frozen-attribute write per field. Anything else goes through the constructor.
_PLAIN_BODY = (not hasattr(VoucherBody, "__post_init__") and "__slots__" not in VoucherBody.__dict__
               and {f.name for f in BODY_FIELDS} == set(VoucherBody.__dataclass_fields__))


_VALUES_OF = operator.itemgetter(*(i for i, _, _ in _FIELDS))  # the field values, in field order
_NAMES = tuple(name for _, name, _ in _FIELDS)
_DIGITS_AT = tuple(k for k, (_, _, kind) in enumerate(_FIELDS) if kind == "digits")
_TEXT_AT = tuple(k for k, (_, _, kind) in enumerate(_FIELDS) if kind == "text")
_UINT_AT = tuple(k for k, (_, _, kind) in enumerate(_FIELDS) if kind == "uint")  # sizes struct has no code for
_TIMESTAMP_AT = _NAMES.index("timestamp_ms")
_SIZE = _STRUCT.size


def _fast(raw: bytes) -> tuple[VoucherBody, bytes] | None:
    if len(raw) != _SIZE:
        return None
    values = _STRUCT.unpack(raw)
    if _STRUCTURE_OF(values) != _STRUCTURE:
        return None
    fields = list(_VALUES_OF(values))
    for k in _DIGITS_AT:
        v = fields[k]
        if not v.isdigit():  # ASCII digits only (bytes.isdigit), hence ASCII and printable
            return None
        fields[k] = v.decode("ascii")
    for k in _TEXT_AT:
        v = fields[k]
        if not v.isascii():
            return None
        v = v.decode("ascii")
        if not v.isprintable():
            return None
        fields[k] = v
    for k in _UINT_AT:
        fields[k] = int.from_bytes(fields[k], "big")
    if fields[_TIMESTAMP_AT] > MAX_TIMESTAMP_MS:
        return None  # past the calendar: the generic decoder refuses it with its message
    if _PLAIN_BODY:
        body = object.__new__(VoucherBody)
        body.__dict__.update(zip(_NAMES, fields, strict=True))
    else:
        body = VoucherBody(**dict(zip(_NAMES, fields, strict=True)))
    return body, values[_SIG_INDEX]


def decode_parts(raw: bytes) -> tuple[VoucherBody, bytes, bytes]:
    """The voucher's body, its exact body bytes (what the card signed) and its signature, without building a
    :class:`Voucher`. Raises :class:`EncodingError` like ``Voucher.decode``."""
    fast = _fast(raw)
    if fast is not None:
        return fast[0], raw[_BODY[0]:_BODY[1]], fast[1]
    voucher = Voucher.decode(raw)
    return voucher.body, voucher.body.encode(), voucher.signature


def decode_voucher(raw: bytes) -> tuple[Voucher, bytes]:
    """The voucher and its exact body bytes (what the card signed). Raises :class:`EncodingError` like
    ``Voucher.decode``."""
    body, body_raw, signature = decode_parts(raw)
    return Voucher(body, signature), body_raw
