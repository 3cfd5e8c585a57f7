"""The payment voucher: what a card signs when it pays, in a canonical BER-TLV encoding.

A voucher binds the wallet id, the card's transaction counter, the amount in fen, the currency, the payee merchant
and terminal, the terminal's random challenge and timestamp, the balance after payment and the algorithm suite.
The signature covers the exact body bytes; two vouchers are the same payment when their bodies are equal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from wallet import suites, tlv
from wallet.errors import EncodingError
from wallet.ids import voucher_id

CNY = 156  # ISO 4217 numeric

T_VOUCHER = 0x70
T_BODY = 0xBF20
T_WALLET_ID = 0xDF01
T_COUNTER = 0xDF02
T_AMOUNT = 0xDF03
T_CURRENCY = 0x5F2A
T_MERCHANT_ID = 0xDF05
T_TERMINAL_ID = 0xDF06
T_CHALLENGE = 0xDF07
T_TIMESTAMP = 0xDF08
T_BALANCE_AFTER = 0xDF09
T_SUITE = 0xDF0A
T_SIGNATURE = 0xDF0B

CHALLENGE_SIZE = 16

F_WALLET_ID = tlv.Field(T_WALLET_ID, "wallet_id", "digits", 16)
F_AMOUNT = tlv.Field(T_AMOUNT, "amount_fen", "uint", 8)
# 9999-12-31T23:59:59.999 in China Standard Time (15:59:59.999Z): the last instant with a calendar day where the
# limits are counted (a later one has no day, and the card refuses it as wrong data instead of failing on it).
MAX_TIMESTAMP_MS = 253_402_271_999_999
F_TIMESTAMP = tlv.Field(T_TIMESTAMP, "timestamp_ms", "uint", 8, maximum=MAX_TIMESTAMP_MS)
F_SUITE = tlv.Field(T_SUITE, "suite", "uint", 1)
# What the terminal asks for; the voucher binds the same fields, in the same order.
REQUEST_FIELDS = (
    F_AMOUNT,
    tlv.Field(T_CURRENCY, "currency", "uint", 2),
    tlv.Field(T_MERCHANT_ID, "merchant_id", "digits", 15),
    tlv.Field(T_TERMINAL_ID, "terminal_id", "text", 8),
    tlv.Field(T_CHALLENGE, "challenge", "bytes", CHALLENGE_SIZE),
    F_TIMESTAMP,
)
BODY_FIELDS = (
    F_WALLET_ID,
    tlv.Field(T_COUNTER, "counter", "uint", 4),
    *REQUEST_FIELDS,
    tlv.Field(T_BALANCE_AFTER, "balance_after_fen", "uint", 8),
    F_SUITE,
)

BODY_RECORD = tlv.FixedRecord(T_BODY, BODY_FIELDS, "voucher body")  # fixed sizes: one encoding per body
SIGNATURE_SIZE = 64  # suite 1 (r||s); other lengths take the generic path
_SIG_HEAD = tlv.encode_tag(T_SIGNATURE) + tlv.encode_length(SIGNATURE_SIZE)
_VOUCHER_HEAD = tlv.encode_tag(T_VOUCHER) + tlv.encode_length(BODY_RECORD.size + len(_SIG_HEAD) + SIGNATURE_SIZE)
_VOUCHER_SIZE = len(_VOUCHER_HEAD) + BODY_RECORD.size + len(_SIG_HEAD) + SIGNATURE_SIZE


@dataclass(frozen=True)
class VoucherBody:
    """The signed fields of a voucher."""

    wallet_id: str
    counter: int
    amount_fen: int
    currency: int
    merchant_id: str
    terminal_id: str
    challenge: bytes
    timestamp_ms: int
    balance_after_fen: int
    suite: int = suites.DEFAULT_SUITE

    @property
    def voucher_id(self) -> str:
        return voucher_id(self.wallet_id, self.counter)

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)

    def encode(self) -> bytes:
        """Canonical bytes of the body (the bytes that are signed); computed once per body."""
        cached = self.__dict__.get("_encoded")
        if cached is None:
            cached = self._encode()
            object.__setattr__(self, "_encoded", cached)
        return cached

    def _encode(self) -> bytes:
        return tlv.encode_record(T_BODY, BODY_FIELDS, self)

    @classmethod
    def decode(cls, raw: bytes) -> VoucherBody:
        """Parse body bytes, accepting only the canonical encoding."""
        raw = bytes(raw)
        values = BODY_RECORD.unpack(raw)
        if values is None:
            return cls._from(tlv.decode_record(raw, T_BODY, BODY_FIELDS, "voucher body").values(), raw)
        return cls._from(values, raw)

    @classmethod
    def _from(cls, values: Iterable[Any], raw: bytes) -> VoucherBody:
        """A body from its decoded field values (in field order) and the bytes they came from. Strict TLV and
        fixed-size fields leave one encoding per body, so those bytes are the canonical bytes: kept, not encoded
        again. A plain frozen dataclass: filling its ``__dict__`` makes the same object as calling it, without
        one frozen-attribute write per field."""
        if not _PLAIN:
            body = cls(*values)
        else:
            body = object.__new__(cls)
            body.__dict__.update(zip(_BODY_NAMES, values, strict=True))
        object.__setattr__(body, "_encoded", raw)
        return body


@dataclass(frozen=True, slots=True)
class Voucher:
    """A signed voucher: its body and the card's signature over the body bytes."""

    body: VoucherBody
    signature: bytes

    @property
    def voucher_id(self) -> str:
        return self.body.voucher_id

    @classmethod
    def sign(cls, body: VoucherBody, key: ec.EllipticCurvePrivateKey) -> Voucher:
        return cls(body, suites.sign(key, body.encode(), body.suite))

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise :class:`~wallet.errors.SignatureError` unless the card's key signed this body."""
        suites.verify(public_key, self.body.encode(), self.signature, self.body.suite)

    def encode(self) -> bytes:
        return tlv.encode(T_VOUCHER, self.body.encode() + tlv.encode(T_SIGNATURE, self.signature))

    @classmethod
    def decode(cls, raw: bytes) -> Voucher:
        """Parse a voucher, accepting only the canonical encoding; raises :class:`EncodingError`.

        A suite-1 voucher on the template (the common case) is read in one pass; anything else the generic way."""
        if len(raw) == _VOUCHER_SIZE and raw.startswith(_VOUCHER_HEAD):
            end = len(_VOUCHER_HEAD) + BODY_RECORD.size
            if raw[end : end + len(_SIG_HEAD)] == _SIG_HEAD:
                body_raw = bytes(raw[len(_VOUCHER_HEAD) : end])
                values = BODY_RECORD.unpack(body_raw)
                if values is not None:
                    return cls(VoucherBody._from(values, body_raw), bytes(raw[-SIGNATURE_SIZE:]))
        return cls._decode_generic(raw)

    @classmethod
    def _decode_generic(cls, raw: bytes) -> Voucher:
        inner = tlv.decode_one(raw, T_VOUCHER)
        items = tlv.decode(inner)
        if [t for t, _ in items] != [T_BODY, T_SIGNATURE]:
            raise EncodingError("voucher must hold a body and a signature")
        body_raw = tlv.encode(T_BODY, items[0][1])
        return cls(VoucherBody.decode(body_raw), items[1][1])  # strict TLV: the bytes read are canonical


_BODY_NAMES = BODY_RECORD.names
_PLAIN = (not hasattr(VoucherBody, "__post_init__") and "__slots__" not in VoucherBody.__dict__
          and set(_BODY_NAMES) == set(VoucherBody.__dataclass_fields__))
