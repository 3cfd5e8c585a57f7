"""The binary settlement batch: what a terminal uploads to ``POST /v1/settlements`` without JSON and hex.

    Content-Type: application/vnd.ecny.settlement-batch

Layout (big-endian, no padding, nothing after the last voucher)::

    magic          4 bytes   b"ECB1" (e-CNY settlement batch, version 1)
    cert_count     u16       0 .. 2 * MAX_BATCH
    cert_count  x  length u16 (1 .. MAX_CERT_BYTES), the DER certificate
    voucher_count  u16       0 .. MAX_BATCH
    voucher_count x  cert u16, issuer u16 (indexes into the certificates), length u16 (1 .. MAX_VOUCHER_BYTES),
                     the voucher TLV exactly as the card sent it

Version 2 (magic ``b"ECB2"``) is the same followed by the discount claims of the batch's discounted payments
(:mod:`wire.claims`); a terminal sends version 1 when it has no claim to make, and the operator takes both.

It carries the same things as the JSON body (vouchers with their wallet and issuer certificates, each certificate
once per batch) at about a third of the size, and it encodes and parses in a fraction of the time. The request
signature (:mod:`wire.signing`) covers these exact bytes. The magic cannot begin a JSON document, so a body sent with
the wrong content type is refused as malformed rather than misread. :func:`decode_batch` is strict: any count,
length or index out of range, a cut-off record or trailing bytes raise :class:`~wire.errors.BadRequest` naming the
byte offset, and nothing is settled.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from wire.claims import DiscountClaim, decode_section, encode_section
from wire.errors import BadRequest

MAX_BATCH = 1000  # vouchers per settlement request, in either body format

CONTENT_TYPE = "application/vnd.ecny.settlement-batch"
MAGIC = b"ECB1"
MAGIC_CLAIMS = b"ECB2"  # version 2: a claims section follows the vouchers
MAX_CERT_BYTES = 4096  # as the JSON body: 8192 hex digits
MAX_VOUCHER_BYTES = 2048  # as the JSON body: 4096 hex digits
MAX_CERTS = 2 * MAX_BATCH  # a wallet certificate and an issuer for each voucher at most



@dataclass(slots=True)
class UploadItem:
    """One voucher as uploaded, with the certificates the terminal read from the card."""

    voucher: bytes
    cert_der: bytes
    issuer_der: bytes
    claim: DiscountClaim | None = None  # the terminal's discount claim for this payment (wire.claims)


_U16 = struct.Struct(">H")
_VOUCHER_HEAD = struct.Struct(">HHH")


def encode_batch(certificates: Sequence[bytes], vouchers: Sequence[tuple[bytes, int, int]],
                 claims: Sequence[tuple[int, DiscountClaim]] = ()) -> bytes:
    """The batch body: ``certificates`` (DER) and ``vouchers`` as (voucher bytes, cert index, issuer index); with
    ``claims`` ((voucher index, claim), indexes increasing) a version-2 batch.

    Raises :class:`ValueError` for anything :func:`decode_batch` would refuse (sizes and indexes)."""
    if len(certificates) > MAX_CERTS or len(vouchers) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} vouchers and {MAX_CERTS} certificates")
    parts = [MAGIC_CLAIMS if claims else MAGIC, _U16.pack(len(certificates))]
    for der in certificates:
        if not 0 < len(der) <= MAX_CERT_BYTES:
            raise ValueError(f"a certificate must be 1 to {MAX_CERT_BYTES} bytes")
        parts += (_U16.pack(len(der)), der)
    parts.append(_U16.pack(len(vouchers)))
    n = len(certificates)
    for raw, cert, issuer in vouchers:
        if not 0 < len(raw) <= MAX_VOUCHER_BYTES:
            raise ValueError(f"a voucher must be 1 to {MAX_VOUCHER_BYTES} bytes")
        if not (0 <= cert < n and 0 <= issuer < n):
            raise ValueError("certificate index out of range")
        parts += (_VOUCHER_HEAD.pack(cert, issuer, len(raw)), raw)
    if claims:
        parts.append(encode_section(claims, len(vouchers)))
    return b"".join(parts)


def decode_batch(body: bytes) -> list[UploadItem]:
    """The vouchers of a batch body with their certificates; :class:`BadRequest` when malformed in any way."""
    size = len(body)
    if body[:4] not in (MAGIC, MAGIC_CLAIMS):
        raise BadRequest("settlement batch: does not start with the magic b'ECB1' (or b'ECB2')")
    pos = 4
    try:
        (count,) = _U16.unpack_from(body, pos)
        pos += 2
        if count > MAX_CERTS:
            raise BadRequest(f"settlement batch: {count} certificates, at most {MAX_CERTS}")
        certs: list[bytes] = []
        for _ in range(count):
            (n,) = _U16.unpack_from(body, pos)
            pos += 2
            if not 0 < n <= MAX_CERT_BYTES or pos + n > size:
                raise BadRequest(f"settlement batch: certificate at byte {pos - 2}: bad length {n}")
            certs.append(body[pos:pos + n])
            pos += n
        (count,) = _U16.unpack_from(body, pos)
        pos += 2
        if count > MAX_BATCH:
            raise BadRequest(f"settlement batch: {count} vouchers, at most {MAX_BATCH}")
        items: list[UploadItem] = []
        unpack = _VOUCHER_HEAD.unpack_from
        ncerts = len(certs)
        for _ in range(count):
            cert, issuer, n = unpack(body, pos)
            pos += 6
            if cert >= ncerts or issuer >= ncerts:
                raise BadRequest(f"settlement batch: voucher at byte {pos - 6}: certificate index out of range")
            if not 0 < n <= MAX_VOUCHER_BYTES or pos + n > size:
                raise BadRequest(f"settlement batch: voucher at byte {pos - 6}: bad length {n}")
            items.append(UploadItem(body[pos:pos + n], certs[cert], certs[issuer]))
            pos += n
        if body[:4] == MAGIC_CLAIMS:
            claims, pos = decode_section(body, pos, len(items))
            for index, claim in claims:
                items[index].claim = claim
    except struct.error:
        raise BadRequest(f"settlement batch: cut off at byte {pos}") from None
    if pos != size:
        raise BadRequest(f"settlement batch: {size - pos} bytes after the last voucher")
    return items
