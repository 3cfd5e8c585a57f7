"""The wallet applet's command set and the TLV structures that cross the air besides the voucher.

| command              | APDU                          | answer                                  |
|----------------------|-------------------------------|-----------------------------------------|
| SELECT by AID        | 00 A4 04 00 Lc AID 00         | FCI (6F: 84 AID, A5: 50 label)          |
| READ INFO            | 80 CA 00 00 00                | wallet info TLV (chained: 61xx)         |
| PAY                  | 80 50 00 00 Lc PAY-request 00 | voucher TLV                             |
| GET LAST TRANSACTION | 80 52 00 00 10 challenge 00   | the last voucher, if it has that challenge |
| LOAD                 | 80 54 00 00 Lc load-token 00  | balance after (8 bytes)                 |
| GET RESPONSE         | 00 C0 00 00 Le                | next part of a chained answer           |
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from wallet import suites, tlv
from wallet.errors import EncodingError
from wallet.voucher import (
    CHALLENGE_SIZE,
    T_AMOUNT,
    T_CHALLENGE,
    T_COUNTER,
    T_CURRENCY,
    T_MERCHANT_ID,
    T_SIGNATURE,
    T_SUITE,
    T_TERMINAL_ID,
    T_TIMESTAMP,
    T_WALLET_ID,
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

INS_NAMES = {
    INS_SELECT: "SELECT",
    INS_GET_RESPONSE: "GET RESPONSE",
    INS_READ_INFO: "READ INFO",
    INS_PAY: "PAY",
    INS_GET_LAST: "GET LAST TRANSACTION",
    INS_LOAD: "LOAD",
}

T_FCI = 0x6F
T_DF_NAME = 0x84
T_FCI_PROP = 0xA5
T_LABEL = 0x50
T_PAY_REQUEST = 0xBF21
T_INFO = 0xBF30
T_LOAD_TOKEN = 0xBF22
T_LOAD_BODY = 0xBF23
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

STATUS_ACTIVE = 0
STATUS_BLOCKED = 1


def fci() -> bytes:
    """The File Control Information returned by SELECT."""
    return tlv.encode(T_FCI, tlv.encode(T_DF_NAME, AID) + tlv.encode(T_FCI_PROP, tlv.encode(T_LABEL, LABEL)))


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
        return tlv.encode(T_PAY_REQUEST, tlv.encode_all([
            (T_AMOUNT, self.amount_fen.to_bytes(8, "big")),
            (T_CURRENCY, self.currency.to_bytes(2, "big")),
            (T_MERCHANT_ID, self.merchant_id.encode("ascii")),
            (T_TERMINAL_ID, self.terminal_id.encode("ascii")),
            (T_CHALLENGE, self.challenge),
            (T_TIMESTAMP, self.timestamp_ms.to_bytes(8, "big")),
        ]))

    @classmethod
    def decode(cls, raw: bytes) -> PayRequest:
        items = tlv.decode(tlv.decode_one(raw, T_PAY_REQUEST))
        if [t for t, _ in items] != [T_AMOUNT, T_CURRENCY, T_MERCHANT_ID, T_TERMINAL_ID, T_CHALLENGE, T_TIMESTAMP]:
            raise EncodingError("PAY request fields missing, extra or out of order")
        v = [val for _, val in items]
        if len(v[4]) != CHALLENGE_SIZE:
            raise EncodingError("challenge must be 16 bytes")
        return cls(
            amount_fen=tlv.uint(v[0], 8, "amount"),
            currency=tlv.uint(v[1], 2, "currency"),
            merchant_id=tlv.text(v[2], 15, "merchant id", digits=True),
            terminal_id=tlv.text(v[3], 8, "terminal id"),
            challenge=v[4],
            timestamp_ms=tlv.uint(v[5], 8, "timestamp"),
        )


def _opt(tag: int, value: int | None, size: int) -> list[tuple[int, bytes]]:
    return [] if value is None else [(tag, value.to_bytes(size, "big"))]


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
    issuer_der: bytes

    def encode(self) -> bytes:
        items: list[tuple[int, bytes]] = [
            (T_WALLET_ID, self.wallet_id.encode("ascii")),
            (T_TIER, bytes([self.tier])),
            (T_BALANCE, self.balance_fen.to_bytes(8, "big")),
            (T_COUNTER, self.counter.to_bytes(4, "big")),
            (T_LOAD_COUNTER, self.load_counter.to_bytes(4, "big")),
            (T_STATUS, bytes([self.status])),
            *_opt(T_SINGLE_MAX, self.single_max, 8),
            *_opt(T_DAILY_MAX, self.daily_max, 8),
            *_opt(T_BALANCE_MAX, self.balance_max, 8),
            (T_OFF_SINGLE_MAX, self.offline_single_max.to_bytes(8, "big")),
            (T_OFF_CUMULATIVE_MAX, self.offline_cumulative_max.to_bytes(8, "big")),
            (T_OFF_COUNT_MAX, self.offline_count_max.to_bytes(2, "big")),
            (T_OFFLINE_AMOUNT, self.offline_amount.to_bytes(8, "big")),
            (T_OFFLINE_COUNT, self.offline_count.to_bytes(2, "big")),
            (T_DAY, self.day.to_bytes(4, "big")),
            (T_DAY_SPENT, self.day_spent.to_bytes(8, "big")),
            (T_CERT, self.cert_der),
            (T_ISSUER_CERT, self.issuer_der),
        ]
        return tlv.encode(T_INFO, tlv.encode_all(items))

    @classmethod
    def decode(cls, raw: bytes) -> CardInfo:
        m = tlv.decode_map(tlv.decode_one(raw, T_INFO))

        def need(tag: int) -> bytes:
            if tag not in m:
                raise EncodingError(f"wallet info lacks tag {tag:#x}")
            return m[tag]

        def opt(tag: int) -> int | None:
            return tlv.uint(m[tag], 8, f"limit {tag:#x}") if tag in m else None

        return cls(
            wallet_id=tlv.text(need(T_WALLET_ID), 16, "wallet id", digits=True),
            tier=tlv.uint(need(T_TIER), 1, "tier"),
            balance_fen=tlv.uint(need(T_BALANCE), 8, "balance"),
            counter=tlv.uint(need(T_COUNTER), 4, "counter"),
            load_counter=tlv.uint(need(T_LOAD_COUNTER), 4, "load counter"),
            status=tlv.uint(need(T_STATUS), 1, "status"),
            single_max=opt(T_SINGLE_MAX),
            daily_max=opt(T_DAILY_MAX),
            balance_max=opt(T_BALANCE_MAX),
            offline_single_max=tlv.uint(need(T_OFF_SINGLE_MAX), 8, "offline single max"),
            offline_cumulative_max=tlv.uint(need(T_OFF_CUMULATIVE_MAX), 8, "offline cumulative max"),
            offline_count_max=tlv.uint(need(T_OFF_COUNT_MAX), 2, "offline count max"),
            offline_amount=tlv.uint(need(T_OFFLINE_AMOUNT), 8, "offline amount"),
            offline_count=tlv.uint(need(T_OFFLINE_COUNT), 2, "offline count"),
            day=tlv.uint(need(T_DAY), 4, "day"),
            day_spent=tlv.uint(need(T_DAY_SPENT), 8, "day spent"),
            cert_der=need(T_CERT),
            issuer_der=need(T_ISSUER_CERT),
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
        return tlv.encode(T_LOAD_BODY, tlv.encode_all([
            (T_WALLET_ID, self.wallet_id.encode("ascii")),
            (T_LOAD_COUNTER, self.load_counter.to_bytes(4, "big")),
            (T_AMOUNT, self.amount_fen.to_bytes(8, "big")),
            (T_TIMESTAMP, self.timestamp_ms.to_bytes(8, "big")),
            (T_SUITE, bytes([self.suite])),
        ]))

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
        body = tlv.decode(items[0][1])
        if [t for t, _ in body] != [T_WALLET_ID, T_LOAD_COUNTER, T_AMOUNT, T_TIMESTAMP, T_SUITE]:
            raise EncodingError("load token fields missing, extra or out of order")
        v = [val for _, val in body]
        token = cls(
            wallet_id=tlv.text(v[0], 16, "wallet id", digits=True),
            load_counter=tlv.uint(v[1], 4, "load counter"),
            amount_fen=tlv.uint(v[2], 8, "amount"),
            timestamp_ms=tlv.uint(v[3], 8, "timestamp"),
            suite=tlv.uint(v[4], 1, "suite"),
            signature=items[1][1],
        )
        if token.encode() != raw:
            raise EncodingError("load token is not in canonical form")
        return token
