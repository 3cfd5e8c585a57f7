"""A fast, equivalent decoder for the operator's hot path: canonical vouchers have one fixed layout.

Every field of a voucher body has a fixed size, so a canonical voucher with a 64-byte signature is one template of
tag and length bytes with values at fixed offsets. :func:`decode_voucher` checks those structure bytes against the
template and reads the values with the same field checks as :meth:`wallet.voucher.Voucher.decode`, without the
generic TLV walk and the two re-encodings. Anything that does not match the template goes through
``Voucher.decode`` itself, so the result (or the :class:`EncodingError`) is the same either way.
"""

from __future__ import annotations

from wallet import tlv
from wallet.voucher import BODY_FIELDS, T_BODY, T_SIGNATURE, T_VOUCHER, Voucher, VoucherBody

SIGNATURE_SIZE = 64


def _layout() -> tuple[bytes, list[tuple[int, int]], list[tuple[tlv.Field, int, int]], tuple[int, int], int]:
    values = []
    for f in BODY_FIELDS:
        assert f.size is not None, "the fast path needs fixed-size fields"
        values.append((f, f.size))
    body_value = b"".join(tlv.encode(f.tag, b"\0" * size) for f, size in values)
    body_tlv = tlv.encode(T_BODY, body_value)
    sig_tlv = tlv.encode(T_SIGNATURE, b"\0" * SIGNATURE_SIZE)
    template = tlv.encode(T_VOUCHER, body_tlv + sig_tlv)
    body_start = len(template) - len(body_tlv) - len(sig_tlv)
    pos = body_start + len(tlv.encode_tag(T_BODY)) + len(tlv.encode_length(len(body_value)))
    fields = []
    for f, size in values:
        pos += len(tlv.encode_tag(f.tag)) + len(tlv.encode_length(size))
        fields.append((f, pos, pos + size))
        pos += size
    sig_start = pos + len(tlv.encode_tag(T_SIGNATURE)) + len(tlv.encode_length(SIGNATURE_SIZE))
    holes = [(a, b) for _, a, b in fields] + [(sig_start, sig_start + SIGNATURE_SIZE)]
    segments, cur = [], 0
    for a, b in holes:
        segments.append((cur, a))
        cur = b
    segments.append((cur, len(template)))
    return template, [(a, b) for a, b in segments if b > a], fields, (body_start, body_start + len(body_tlv)), \
        sig_start


_TEMPLATE, _SEGMENTS, _FIELDS, _BODY, _SIG = _layout()


def decode_voucher(raw: bytes) -> tuple[Voucher, bytes]:
    """The voucher and its exact body bytes (what the card signed). Raises :class:`EncodingError` like
    ``Voucher.decode``."""
    if len(raw) == len(_TEMPLATE) and all(raw[a:b] == _TEMPLATE[a:b] for a, b in _SEGMENTS):
        kwargs = {}
        for f, a, b in _FIELDS:
            v = raw[a:b]
            if f.kind == "uint":
                kwargs[f.name] = int.from_bytes(v, "big")
            elif f.kind == "bytes":
                kwargs[f.name] = v
            else:
                kwargs[f.name] = tlv.text(v, f.size, f.name, digits=f.kind == "digits")
        return Voucher(VoucherBody(**kwargs), raw[_SIG:_SIG + SIGNATURE_SIZE]), raw[_BODY[0]:_BODY[1]]
    voucher = Voucher.decode(raw)
    return voucher, voucher.body.encode()
