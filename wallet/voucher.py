"""The payment voucher: what a card signs when it pays, in a canonical BER-TLV encoding.

A voucher binds the wallet id, the card's transaction counter, the amount in fen, the currency, the payee merchant
and terminal, the terminal's random challenge and timestamp, the balance after payment and the algorithm suite.
The signature covers the exact body bytes; two vouchers are the same payment when their bodies are equal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

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
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant a calendar date exists for
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

if any(f.size is None for f in BODY_FIELDS):  # VoucherBody.decode relies on it (one encoding per body)
    raise RuntimeError("every voucher body field must have a fixed size")


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
        body = cls(**tlv.decode_record(raw, T_BODY, BODY_FIELDS, "voucher body"))
        # Strict TLV and fixed-size fields leave one encoding per body (checked at import below), so the bytes
        # read are the canonical bytes: keep them instead of encoding again.
        object.__setattr__(body, "_encoded", bytes(raw))
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
        """Parse a voucher, accepting only the canonical encoding; raises :class:`EncodingError`."""
        inner = tlv.decode_one(raw, T_VOUCHER)
        items = tlv.decode(inner)
        if [t for t, _ in items] != [T_BODY, T_SIGNATURE]:
            raise EncodingError("voucher must hold a body and a signature")
        body_raw = tlv.encode(T_BODY, items[0][1])
        return cls(VoucherBody.decode(body_raw), items[1][1])  # strict TLV: the bytes read are canonical
