"""Discount claims: what a terminal adds to its settlement upload for a payment it took with an instant discount.

A claim says: this voucher paid the net amount of a payment of ``gross_fen``; the rest, ``discount_fen``, is the
campaign ``campaign_id``'s to pay to the merchant. The terminal signs each claim with its own key (suite 1, ECDSA
P-256 SHA-256, 64-byte r||s) over :func:`claim_message`, which binds the terminal, the SHA-256 of the voucher bytes
as uploaded, the campaign and both amounts: a claim cannot be moved to another voucher or terminal, nor its amounts
changed, without the terminal's key. The operator judges claims after the vouchers (``bank.claims``).

In the binary batch (:mod:`wire.batch`, magic ``b"ECB2"``) the claims follow the last voucher::

    claim_count   u16       0 .. voucher_count
    claim_count x voucher u16 (index of its voucher in the batch, strictly increasing), gross u64, discount u32,
                  campaign length u8 (1 .. 32), the campaign id (ASCII: a-z, 0-9, -), signature 64 bytes

In the JSON body a voucher carries its claim as ``claim`` (:class:`wire.models.ClaimUpload`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from wallet import suites
from wallet.errors import SignatureError
from wire.errors import BadRequest

SCHEME = "ECNY-CLAIM-1"
CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_DISCOUNT_FEN = 0xFFFFFFFF
MAX_GROSS_FEN = 10**12
_HEAD = struct.Struct(">HQIB")
_U16 = struct.Struct(">H")
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class DiscountClaim:
    """One voucher's claim on a campaign (amounts in fen; ``signature`` by the uploading terminal)."""

    campaign_id: str
    gross_fen: int
    discount_fen: int
    signature: bytes

    def check(self) -> None:
        """Raise :class:`BadRequest` when a field is out of range (before any signature is checked)."""
        if not CAMPAIGN_ID.fullmatch(self.campaign_id):
            raise BadRequest(f"discount claim: campaign id {self.campaign_id!r} is not 1-32 of a-z, 0-9, -")
        if not 0 < self.discount_fen < self.gross_fen <= MAX_GROSS_FEN or self.discount_fen > MAX_DISCOUNT_FEN:
            raise BadRequest("discount claim: amounts out of range (0 < discount < gross)")
        if len(self.signature) != SIGNATURE_BYTES:
            raise BadRequest(f"discount claim: the signature must be {SIGNATURE_BYTES} bytes")


def claim_message(terminal_id: str, voucher_sha256: str, campaign_id: str, gross_fen: int, discount_fen: int) -> bytes:
    """The exact bytes a terminal signs for one claim (``voucher_sha256``: hex SHA-256 of the voucher bytes)."""
    return "\n".join([SCHEME, terminal_id, voucher_sha256, campaign_id, str(gross_fen), str(discount_fen)]).encode()


def sign_claim(key: ec.EllipticCurvePrivateKey, terminal_id: str, voucher_sha256: str, campaign_id: str,
               gross_fen: int, discount_fen: int) -> DiscountClaim:
    """A claim signed with the terminal's key."""
    sig = suites.sign(key, claim_message(terminal_id, voucher_sha256, campaign_id, gross_fen, discount_fen))
    return DiscountClaim(campaign_id, gross_fen, discount_fen, sig)


def encode_section(claims: Sequence[tuple[int, DiscountClaim]], voucher_count: int) -> bytes:
    """The claims section of a version-2 batch: (voucher index, claim), indexes strictly increasing."""
    parts = [_U16.pack(len(claims))]
    last = -1
    for index, claim in claims:
        if not last < index < voucher_count:
            raise ValueError("claim voucher indexes must increase and name a voucher of the batch")
        claim.check()
        cid = claim.campaign_id.encode("ascii")
        parts += (_HEAD.pack(index, claim.gross_fen, claim.discount_fen, len(cid)), cid, claim.signature)
        last = index
    return b"".join(parts)


def decode_section(body: bytes, pos: int, voucher_count: int) -> tuple[list[tuple[int, DiscountClaim]], int]:
    """The claims of a version-2 batch from ``pos``, and the position after them; :class:`BadRequest` (naming the
    byte offset) for a count, index, length or field out of range. ``struct.error`` when cut off."""
    (count,) = _U16.unpack_from(body, pos)
    pos += 2
    if count > voucher_count:
        raise BadRequest(f"settlement batch: {count} discount claims for {voucher_count} vouchers")
    out: list[tuple[int, DiscountClaim]] = []
    last = -1
    for _ in range(count):
        at = pos
        index, gross, discount, n = _HEAD.unpack_from(body, pos)
        pos += _HEAD.size
        if not last < index < voucher_count:
            raise BadRequest(f"settlement batch: discount claim at byte {at}: voucher index out of order or range")
        end = pos + n + SIGNATURE_BYTES
        if end > len(body):
            raise struct.error("cut off")
        try:
            cid = body[pos:pos + n].decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(f"settlement batch: discount claim at byte {at}: campaign id is not ASCII") from None
        claim = DiscountClaim(cid, gross, discount, body[pos + n:end])
        try:
            claim.check()
        except BadRequest as exc:
            raise BadRequest(f"settlement batch: discount claim at byte {at}: {exc}") from None
        out.append((index, claim))
        pos, last = end, index
    return out, pos


def verify_claim(public_key: ec.EllipticCurvePublicKey, terminal_id: str, voucher_sha256: str,
                 claim: DiscountClaim) -> bool:
    """Whether the terminal's key signed this claim for this voucher."""
    message = claim_message(terminal_id, voucher_sha256, claim.campaign_id, claim.gross_fen, claim.discount_fen)
    try:
        suites.verify(public_key, message, claim.signature, suites.DEFAULT_SUITE)
    except SignatureError:
        return False
    return True
