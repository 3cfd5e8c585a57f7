"""The wallet applet's command set and the TLV structures that cross the air besides the voucher.

:data:`COMMANDS` is the command table (docs/protocol.md shows it; a test compares the two).

AUTHENTICATE proves the card holds its certified key without paying (a gate's re-entry on tickets bought earlier):
the card signs an auth body ``BF24`` (its wallet id, then the request's terminal id, challenge and timestamp, and
the suite). The tag keeps it apart from anything else a card signs: no auth signature is a voucher or a load token.
It changes nothing on the card.

READ INFO's P1 says what to include: ``00`` everything, ``01`` all but the issuer's certificate, for a terminal
that holds the issuing CA's certificate already (it saves about 500 bytes, two GET RESPONSEs, on every tap).

RECOVER asks the card's transaction log (its last payments, a bounded list kept with its state) for the vouchers
of any of a terminal's open charges in one APDU, however many are open: the terminal sends a Bloom filter of their
challenges (:func:`log_filter`), the card answers ``BF26`` with the counter of the oldest payment its log holds and
every logged voucher whose challenge the filter admits (:func:`filter_admits`); the terminal keeps those whose
challenge is exactly one of its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from wallet import suites, tlv
from wallet.errors import EncodingError
from wallet.voucher import (
    CHALLENGE_SIZE,
    F_AMOUNT,
    F_SUITE,
    F_TIMESTAMP,
    F_WALLET_ID,
    REQUEST_FIELDS,
    T_CHALLENGE,
    T_COUNTER,
    T_SIGNATURE,
    T_TERMINAL_ID,
)

AID = bytes.fromhex("F045434E59504159")  # F0 + "ECNYPAY": proprietary, unregistered RID
LABEL = b"e-CNY WALLET"

CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80
INS_SELECT = 0xA4
INS_GET_RESPONSE = 0xC0
INS_READ_INFO = 0xCA
INS_PAY = 0x50
INS_GET_LAST = 0x52
INS_LOAD = 0x54
INS_AUTHENTICATE = 0x88
INS_RECOVER = 0x56
READ_INFO_FULL = 0x00
READ_INFO_WITHOUT_ISSUER = 0x01

INS_NAMES = {
    INS_SELECT: "SELECT",
    INS_GET_RESPONSE: "GET RESPONSE",
    INS_READ_INFO: "READ INFO",
    INS_PAY: "PAY",
    INS_GET_LAST: "GET LAST TRANSACTION",
    INS_LOAD: "LOAD",
    INS_AUTHENTICATE: "AUTHENTICATE",
    INS_RECOVER: "RECOVER",
}

# The command table: name, APDU, answer (docs/protocol.md shows exactly these rows). An APDU without its Le byte
# gets no data: SELECT and LOAD then answer 9000 alone; the commands whose point is their answer refuse with 6700
# before they do anything.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("SELECT by AID", "00 A4 04 00 Lc AID 00", "FCI (`6F`: `84` AID, `A5`: `50` label \"e-CNY WALLET\")"),
    ("READ INFO", "80 CA P1 00 00", "wallet info `BF30` (chained: `61xx`)"),
    ("PAY", "80 50 00 00 Lc PAY-request 00", "the voucher `70`"),
    ("RECOVER", "80 56 k 00 Lc filter 00",
     "`BF26`: the log's first counter `DF28`, the vouchers `70` the filter admits"),
    ("GET LAST TRANSACTION", "80 52 00 00 10 challenge 00", "the last voucher, if its PAY carried that challenge"),
    ("LOAD", "80 54 00 00 Lc load-token 00", "the balance after (8 bytes)"),
    ("AUTHENTICATE", "80 88 00 00 Lc auth-request 00", "a 64-byte signature over the auth body"),
    ("GET RESPONSE", "00 C0 00 00 Le", "the next part of a chained answer"),
)

T_FCI = 0x6F
T_DF_NAME = 0x84
T_FCI_PROP = 0xA5
T_LABEL = 0x50
T_PAY_REQUEST = 0xBF21
T_INFO = 0xBF30
T_LOAD_TOKEN = 0xBF22
T_LOAD_BODY = 0xBF23
T_AUTH_REQUEST = 0xBF25
T_AUTH_BODY = 0xBF24
T_TIER = 0xDF20
T_BALANCE = 0xDF21
T_OFFLINE_AMOUNT = 0xDF22
T_OFFLINE_COUNT = 0xDF23
T_DAY = 0xDF24
T_DAY_SPENT = 0xDF25
T_LOAD_COUNTER = 0xDF26
T_STATUS = 0xDF27
T_SINGLE_MAX = 0xDF40
T_DAILY_MAX = 0xDF41
T_BALANCE_MAX = 0xDF42
T_OFF_SINGLE_MAX = 0xDF43
T_OFF_CUMULATIVE_MAX = 0xDF44
T_OFF_COUNT_MAX = 0xDF45
T_CERT = 0xDF30
T_ISSUER_CERT = 0xDF31
T_RECOVERED = 0xBF26
T_LOG_FIRST = 0xDF28
T_VOUCHER = 0x70

FILTER_MAX_BYTES = 255  # one short APDU's data
FILTER_MAX_HASHES = CHALLENGE_SIZE // 2  # bit positions per challenge: its 16-bit words

STATUS_ACTIVE = 0
STATUS_BLOCKED = 1


@functools.cache
def fci() -> bytes:
    """The File Control Information returned by SELECT."""
    return tlv.encode(T_FCI, tlv.encode(T_DF_NAME, AID) + tlv.encode(T_FCI_PROP, tlv.encode(T_LABEL, LABEL)))


def _positions(challenge: bytes, k: int, bits: int) -> list[int]:
    """The filter's bit positions for a challenge: its first ``k`` 16-bit words modulo the filter's size. A
    challenge is 16 random bytes, so its words are as good as any hash of it."""
    return [int.from_bytes(challenge[2 * i: 2 * i + 2], "big") % bits for i in range(k)]


def log_filter(challenges: list[bytes]) -> tuple[int, bytes]:
    """A Bloom filter of ``challenges`` for RECOVER: (k, the filter bytes). Four bytes a challenge up to the 255
    bytes of one APDU, with k = 8 (about 6 false matches in a million logged payments); past 63 challenges the
    filter stays 255 bytes and k falls to what fits (``bits / n * ln 2``), so more open charges mean more false
    matches (answered, then dropped by the terminal), never a second APDU to ask."""
    n = max(1, len(challenges))
    size = min(FILTER_MAX_BYTES, 4 * n)
    bits = 8 * size
    k = max(1, min(FILTER_MAX_HASHES, round(bits / n * 0.693)))
    out = bytearray(size)
    for challenge in challenges:
        for pos in _positions(challenge, k, bits):
            out[pos >> 3] |= 0x80 >> (pos & 7)
    return k, bytes(out)


def filter_admits(flt: bytes, k: int, challenge: bytes) -> bool:
    """Whether ``challenge`` may be one of those the filter was built from (no false negatives)."""
    return all(flt[pos >> 3] & (0x80 >> (pos & 7)) for pos in _positions(challenge, k, 8 * len(flt)))


@dataclass(frozen=True, slots=True)
class Recovered:
    """RECOVER's answer: the counter of the oldest payment the card's log holds (its counter + 1 when the log is
    empty), and the logged vouchers the filter admitted, oldest first."""

    log_first: int
    vouchers: tuple[bytes, ...]

    def encode(self) -> bytes:
        return tlv.encode(T_RECOVERED, tlv.encode(T_LOG_FIRST, self.log_first.to_bytes(4, "big"))
                          + b"".join(self.vouchers))

    @classmethod
    def decode(cls, raw: bytes) -> Recovered:
        items = tlv.decode(tlv.decode_one(raw, T_RECOVERED))
        if not items or items[0][0] != T_LOG_FIRST or any(t != T_VOUCHER for t, _ in items[1:]):
            raise EncodingError("RECOVER answer must hold the log's first counter, then vouchers")
        first = tlv.uint(items[0][1], 4, "log first counter")
        return cls(first, tuple(tlv.encode(T_VOUCHER, v) for _, v in items[1:]))


@dataclass(frozen=True, slots=True)
class PayRequest:
    """What the terminal asks the card to pay."""

    amount_fen: int
    currency: int
    merchant_id: str
    terminal_id: str
    challenge: bytes
    timestamp_ms: int

    def encode(self) -> bytes:
        return tlv.encode_record(T_PAY_REQUEST, REQUEST_FIELDS, self)

    @classmethod
    def decode(cls, raw: bytes) -> PayRequest:
        return cls(**PAY_REQUEST_RECORD.decode(raw))


PAY_REQUEST_RECORD = tlv.FixedRecord(T_PAY_REQUEST, REQUEST_FIELDS, "PAY request")


@dataclass(frozen=True, slots=True)
class CardInfo:
    """What READ INFO tells: identity, balance, counters, limits, offline usage and the certificates."""

    wallet_id: str
    tier: int
    balance_fen: int
    counter: int
    load_counter: int
    status: int
    single_max: int | None
    daily_max: int | None
    balance_max: int | None
    offline_single_max: int
    offline_cumulative_max: int
    offline_count_max: int
    offline_amount: int
    offline_count: int
    day: int
    day_spent: int
    cert_der: bytes
    issuer_der: bytes | None  # None when READ INFO asked to leave it out

    def encode(self) -> bytes:
        return tlv.encode_record(T_INFO, INFO_FIELDS, self)

    @classmethod
    def decode(cls, raw: bytes) -> CardInfo:
        return cls(**tlv.decode_record(raw, T_INFO, INFO_FIELDS, "wallet info"))


INFO_FIELDS = (
    F_WALLET_ID,
    tlv.Field(T_TIER, "tier", "uint", 1),
    tlv.Field(T_BALANCE, "balance_fen", "uint", 8),
    tlv.Field(T_COUNTER, "counter", "uint", 4),
    tlv.Field(T_LOAD_COUNTER, "load_counter", "uint", 4),
    tlv.Field(T_STATUS, "status", "uint", 1),
    tlv.Field(T_SINGLE_MAX, "single_max", "uint", 8, optional=True),
    tlv.Field(T_DAILY_MAX, "daily_max", "uint", 8, optional=True),
    tlv.Field(T_BALANCE_MAX, "balance_max", "uint", 8, optional=True),
    tlv.Field(T_OFF_SINGLE_MAX, "offline_single_max", "uint", 8),
    tlv.Field(T_OFF_CUMULATIVE_MAX, "offline_cumulative_max", "uint", 8),
    tlv.Field(T_OFF_COUNT_MAX, "offline_count_max", "uint", 2),
    tlv.Field(T_OFFLINE_AMOUNT, "offline_amount", "uint", 8),
    tlv.Field(T_OFFLINE_COUNT, "offline_count", "uint", 2),
    tlv.Field(T_DAY, "day", "uint", 4),
    tlv.Field(T_DAY_SPENT, "day_spent", "uint", 8),
    tlv.Field(T_CERT, "cert_der", "bytes"),
    tlv.Field(T_ISSUER_CERT, "issuer_der", "bytes", optional=True),
)


@dataclass(frozen=True, slots=True)
class LoadToken:
    """An operator-signed order to credit ``amount_fen`` to one wallet, numbered by ``load_counter``."""

    wallet_id: str
    load_counter: int
    amount_fen: int
    timestamp_ms: int
    signature: bytes = b""
    suite: int = suites.DEFAULT_SUITE

    def body(self) -> bytes:
        return tlv.encode_record(T_LOAD_BODY, LOAD_FIELDS, self)

    def signed(self, key: ec.EllipticCurvePrivateKey) -> LoadToken:
        return LoadToken(self.wallet_id, self.load_counter, self.amount_fen, self.timestamp_ms,
                         suites.sign(key, self.body(), self.suite), self.suite)

    def verify(self, issuer_key: ec.EllipticCurvePublicKey) -> None:
        suites.verify(issuer_key, self.body(), self.signature, self.suite)

    def encode(self) -> bytes:
        return tlv.encode(T_LOAD_TOKEN, self.body() + tlv.encode(T_SIGNATURE, self.signature))

    @classmethod
    def decode(cls, raw: bytes) -> LoadToken:
        items = tlv.decode(tlv.decode_one(raw, T_LOAD_TOKEN))
        if [t for t, _ in items] != [T_LOAD_BODY, T_SIGNATURE]:
            raise EncodingError("load token must hold a body and a signature")
        body = tlv.decode_record(tlv.encode(T_LOAD_BODY, items[0][1]), T_LOAD_BODY, LOAD_FIELDS, "load token")
        token = cls(**body, signature=items[1][1])
        if token.encode() != raw:
            raise EncodingError("load token is not in canonical form")
        return token


LOAD_FIELDS = (F_WALLET_ID, tlv.Field(T_LOAD_COUNTER, "load_counter", "uint", 4), F_AMOUNT, F_TIMESTAMP, F_SUITE)


AUTH_REQUEST_FIELDS = (
    tlv.Field(T_TERMINAL_ID, "terminal_id", "text", 8),
    tlv.Field(T_CHALLENGE, "challenge", "bytes", CHALLENGE_SIZE),
    F_TIMESTAMP,
)
AUTH_REQUEST_RECORD = tlv.FixedRecord(T_AUTH_REQUEST, AUTH_REQUEST_FIELDS, "AUTHENTICATE request")
AUTH_BODY_FIELDS = (F_WALLET_ID, *AUTH_REQUEST_FIELDS, F_SUITE)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A terminal's challenge: prove you hold the key your certificate names, to this terminal, now."""

    terminal_id: str
    challenge: bytes
    timestamp_ms: int

    def encode(self) -> bytes:
        return tlv.encode_record(T_AUTH_REQUEST, AUTH_REQUEST_FIELDS, self)

    @classmethod
    def decode(cls, raw: bytes) -> AuthRequest:
        return cls(**AUTH_REQUEST_RECORD.decode(raw))

    def body(self, wallet_id: str, suite: int = suites.DEFAULT_SUITE) -> bytes:
        """The bytes the card signs: the wallet id, this request and the suite, under their own tag."""
        return tlv.encode_record(T_AUTH_BODY, AUTH_BODY_FIELDS, _AuthBody(wallet_id, self.terminal_id, self.challenge,
                                                                          self.timestamp_ms, suite))

    def verify(self, wallet_id: str, signature: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
        """Raise :class:`~wallet.errors.SignatureError` unless the key signed this request for ``wallet_id``."""
        suites.verify(public_key, self.body(wallet_id), signature, suites.DEFAULT_SUITE)


@dataclass(frozen=True, slots=True)
class _AuthBody:
    wallet_id: str
    terminal_id: str
    challenge: bytes
    timestamp_ms: int
    suite: int
