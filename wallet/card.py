"""The simulated hardware wallet: a secure-element applet that answers ISO 7816-4 APDUs and nothing else.

Every state change (PAY, LOAD) is computed on a copy, persisted through the ``persist`` callback, and only then
made current and answered: a failure to persist leaves the card exactly as it was (all or nothing).

The card keeps a transaction log, as a secure element does: its last ``log_depth`` vouchers (oldest first, their
counters consecutive up to the card's counter), persisted with the rest of its state. RECOVER answers from it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from wallet import apdu as sw
from wallet import suites, tlv
from wallet.apdu import CommandApdu, ResponseApdu
from wallet.errors import CardKeyError, CertificateError, EcnyError, EncodingError, SignatureError
from wallet.keys import key_from_pem
from wallet.protocol import (
    AID,
    CLA_ISO,
    CLA_PROPRIETARY,
    INFO_FIELDS,
    INS_AUTHENTICATE,
    INS_GET_LAST,
    INS_GET_RESPONSE,
    INS_LOAD,
    INS_PAY,
    INS_READ_INFO,
    INS_RECOVER,
    INS_SELECT,
    READ_INFO_WITHOUT_ISSUER,
    STATUS_ACTIVE,
    T_INFO,
    AuthRequest,
    CardInfo,
    LoadToken,
    PayRequest,
    Recovered,
    fci,
    filter_admits,
)
from wallet.voucher import CHALLENGE_SIZE, CNY, Voucher, VoucherBody

INFO_FIELDS_WITHOUT_ISSUER = tuple(f for f in INFO_FIELDS if f.name != "issuer_der")

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))
MAX_COUNTER = 0xFFFFFFFF
LOG_DEPTH = 10  # payments a card's transaction log keeps by default

# Commands whose point is their answer: sent without Le (ISO 7816-4 case 1 or 3) they are refused with 6700 before
# they do anything. SELECT and LOAD without Le do their work and answer 9000 without data.
_NEEDS_LE = frozenset({INS_READ_INFO, INS_PAY, INS_GET_LAST, INS_RECOVER, INS_AUTHENTICATE})
_NEEDS_DATA = frozenset({INS_PAY, INS_LOAD, INS_AUTHENTICATE, INS_RECOVER})  # without command data: 6700


_DAY_MS = 86_400_000
_CST_OFFSET_MS = 8 * 3600 * 1000  # China Standard Time is UTC+8 all year: no daylight saving
_EPOCH_DAY = dt.date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _china_date(day_number: int) -> tuple[int, str]:
    d = _EPOCH_DAY + dt.timedelta(days=day_number)
    return d.year * 10000 + d.month * 100 + d.day, d.isoformat()


def china_day(timestamp_ms: int) -> int:
    """The calendar day (YYYYMMDD, China Standard Time) of a timestamp: daily limits follow the local day."""
    return _china_date((timestamp_ms + _CST_OFFSET_MS) // _DAY_MS)[0]


def china_day_text(timestamp_ms: int) -> str:
    """The China Standard Time calendar day of a timestamp, as YYYY-MM-DD (the merchant's business day)."""
    return _china_date((timestamp_ms + _CST_OFFSET_MS) // _DAY_MS)[1]


@dataclass
class CardState:
    """Everything a card holds. Serializable to JSON (bytes as hex) for the mock card store."""

    card_id: str
    wallet_id: str
    tier: int
    key_pem: str
    cert_der: bytes
    issuer_der: bytes
    balance_fen: int = 0
    counter: int = 0
    load_counter: int = 0
    status: int = STATUS_ACTIVE
    single_max: int | None = None
    daily_max: int | None = None
    balance_max: int | None = None
    offline_single_max: int = 0
    offline_cumulative_max: int = 0
    offline_count_max: int = 0
    offline_amount: int = 0
    offline_count: int = 0
    day: int = 0
    day_spent: int = 0
    log: tuple[tuple[bytes, bytes], ...] = ()  # (challenge, voucher) of the last payments, oldest first
    log_depth: int = LOG_DEPTH
    clone_of: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, bytes):
                out[k] = v.hex()
        out["log"] = [{"challenge": c.hex(), "voucher": v.hex()} for c, v in self.log]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardState:
        data = dict(data)
        for k in ("cert_der", "issuer_der"):
            if data.get(k) is not None:
                data[k] = bytes.fromhex(data[k])
        last, challenge = data.pop("last_voucher", None), data.pop("last_challenge", None)  # a card from before logs
        log = [(bytes.fromhex(e["challenge"]), bytes.fromhex(e["voucher"])) for e in data.get("log", ())]
        if not log and last and challenge:
            log = [(bytes.fromhex(challenge), bytes.fromhex(last))]
        data["log"] = tuple(log)
        return cls(**data)

    def evolve(self, **changes: Any) -> CardState:
        """A copy with ``changes`` (what ``dataclasses.replace`` gives, without running ``__init__`` again: a
        plain dataclass, so its ``__dict__`` is its state)."""
        new = object.__new__(CardState)
        new.__dict__ = {**self.__dict__, **changes}
        return new

    def info(self, with_issuer: bool = True) -> CardInfo:
        return CardInfo(
            wallet_id=self.wallet_id, tier=self.tier, balance_fen=self.balance_fen, counter=self.counter,
            load_counter=self.load_counter, status=self.status, single_max=self.single_max,
            daily_max=self.daily_max, balance_max=self.balance_max, offline_single_max=self.offline_single_max,
            offline_cumulative_max=self.offline_cumulative_max, offline_count_max=self.offline_count_max,
            offline_amount=self.offline_amount, offline_count=self.offline_count, day=self.day,
            day_spent=self.day_spent, cert_der=self.cert_der,
            issuer_der=self.issuer_der if with_issuer else None,
        )


class CardDecline(EcnyError):
    """A command the card refuses; carries the status word it answers with."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or sw.sw_name(status))
        self.status = status


Persist = Callable[[CardState], None]


class WalletApplet:
    """The wallet applet. ``process`` takes command APDU bytes and returns response APDU bytes; it never raises."""

    def __init__(self, state: CardState, persist: Persist | None = None) -> None:
        self.state = state
        self._persist = persist
        self._selected = False
        self._pending = b""  # rest of a chained answer, fetched with GET RESPONSE
        # The key lives in the secure element, ready to sign: loaded at power-up, not inside a customer's tap.
        try:
            self._key = key_from_pem(state.key_pem.encode())
        except (ValueError, CertificateError) as exc:
            raise CardKeyError(f"card {state.card_id}: its private key does not load ({exc})") from exc
        self._handlers = {INS_READ_INFO: self._read_info, INS_PAY: self._pay, INS_GET_LAST: self._get_last,
                          INS_LOAD: self._load, INS_AUTHENTICATE: self._authenticate, INS_RECOVER: self._recover}
        self._issuer_key: ec.EllipticCurvePublicKey | None = None

    # -- the APDU entry point -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on reset (the card entered a field): nothing selected, no pending answer."""
        self._selected = False
        self._pending = b""

    def process(self, raw: bytes) -> bytes:
        try:
            cmd = CommandApdu.parse(raw)
        except EncodingError:
            self._pending = b""
            return ResponseApdu(b"", sw.SW_WRONG_LENGTH).to_bytes()
        if cmd.cla == CLA_ISO and cmd.ins == INS_GET_RESPONSE:
            return self._get_response(cmd)
        self._pending = b""
        try:
            data = self._dispatch(cmd)
        except CardDecline as exc:
            return ResponseApdu(b"", exc.status).to_bytes()
        except EncodingError:
            return ResponseApdu(b"", sw.SW_WRONG_DATA).to_bytes()
        if cmd.le is None:  # no answer was asked for (case 1 or 3): success without data
            return b"\x90\x00"
        return self._answer(data, cmd.le)

    def _answer(self, data: bytes, le: int) -> bytes:
        size = min(le, 256)
        if len(data) <= size:
            return data + b"\x90\x00"
        self._pending = data[size:]
        return ResponseApdu(data[:size], sw.SW_BYTES_REMAINING | (min(len(self._pending), 256) & 0xFF)).to_bytes()

    def _get_response(self, cmd: CommandApdu) -> bytes:
        if not self._pending:
            return ResponseApdu(b"", sw.SW_CONDITIONS_NOT_SATISFIED).to_bytes()
        if cmd.p1 or cmd.p2:
            self._pending = b""
            return ResponseApdu(b"", sw.SW_WRONG_P1P2).to_bytes()
        if cmd.data or cmd.le is None:  # GET RESPONSE is case 2: Le and nothing else; the answer stays pending
            return ResponseApdu(b"", sw.SW_WRONG_LENGTH).to_bytes()
        data, self._pending = self._pending, b""
        return self._answer(data, cmd.le)

    def _dispatch(self, cmd: CommandApdu) -> bytes:
        status = sw.class_status(cmd.cla)
        if status is not None:
            raise CardDecline(status)
        if cmd.cla == CLA_ISO:
            if cmd.ins != INS_SELECT:
                raise CardDecline(sw.SW_INS_NOT_SUPPORTED)
            return self._select(cmd)
        if cmd.cla != CLA_PROPRIETARY:
            raise CardDecline(sw.SW_CLA_NOT_SUPPORTED)
        handler = self._handlers.get(cmd.ins)
        if handler is None:
            raise CardDecline(sw.SW_INS_NOT_SUPPORTED)
        if not self._selected:
            raise CardDecline(sw.SW_CONDITIONS_NOT_SATISFIED, "application not selected")
        if cmd.p2 or (cmd.p1 and not ((cmd.ins == INS_READ_INFO and cmd.p1 == READ_INFO_WITHOUT_ISSUER)
                                      or cmd.ins == INS_RECOVER)):
            raise CardDecline(sw.SW_WRONG_P1P2)
        if (cmd.le is None and cmd.ins in _NEEDS_LE) or (not cmd.data and cmd.ins in _NEEDS_DATA):
            raise CardDecline(sw.SW_WRONG_LENGTH)
        return handler(cmd)

    # -- commands ---------------------------------------------------------------------------------------------------
    def _select(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            raise CardDecline(sw.SW_WRONG_P1P2)
        if not cmd.data:
            raise CardDecline(sw.SW_WRONG_LENGTH)
        if cmd.data != AID:  # another application: not here, and this one stays selected (as on Java Card)
            raise CardDecline(sw.SW_FILE_NOT_FOUND)
        self._selected = True
        return b"" if cmd.p2 == 0x0C else fci()

    def _read_info(self, cmd: CommandApdu) -> bytes:
        if cmd.data:
            raise CardDecline(sw.SW_WRONG_LENGTH)
        # The state names its fields as CardInfo does: encoded straight from it (what info().encode() gives).
        fields = INFO_FIELDS_WITHOUT_ISSUER if cmd.p1 == READ_INFO_WITHOUT_ISSUER else INFO_FIELDS
        return tlv.encode_record(T_INFO, fields, self.state)

    def _pay(self, cmd: CommandApdu) -> bytes:
        req = PayRequest.decode(cmd.data)
        s = self.state
        if s.status != STATUS_ACTIVE:
            raise CardDecline(sw.SW_AUTH_METHOD_BLOCKED)
        if req.currency != CNY or req.amount_fen <= 0:
            raise CardDecline(sw.SW_WRONG_DATA)
        if s.counter >= MAX_COUNTER:
            raise CardDecline(sw.SW_CONDITIONS_NOT_SATISFIED, "transaction counter exhausted")
        if req.amount_fen > s.balance_fen:
            raise CardDecline(sw.SW_INSUFFICIENT_BALANCE)
        if s.single_max is not None and req.amount_fen > s.single_max:
            raise CardDecline(sw.SW_OVER_SINGLE_LIMIT)
        day = max(s.day, china_day(req.timestamp_ms))
        day_spent = (s.day_spent if day == s.day else 0) + req.amount_fen
        if s.daily_max is not None and day_spent > s.daily_max:
            raise CardDecline(sw.SW_OVER_DAILY_LIMIT)
        if (req.amount_fen > s.offline_single_max
                or s.offline_amount + req.amount_fen > s.offline_cumulative_max
                or s.offline_count + 1 > s.offline_count_max):
            raise CardDecline(sw.SW_OVER_OFFLINE_LIMIT)
        body = VoucherBody(
            wallet_id=s.wallet_id, counter=s.counter + 1, amount_fen=req.amount_fen, currency=req.currency,
            merchant_id=req.merchant_id, terminal_id=req.terminal_id, challenge=req.challenge,
            timestamp_ms=req.timestamp_ms, balance_after_fen=s.balance_fen - req.amount_fen,
        )
        voucher = Voucher.sign(body, self._key).encode()
        self._commit(s.evolve(
            balance_fen=body.balance_after_fen, counter=body.counter, day=day, day_spent=day_spent,
            offline_amount=s.offline_amount + req.amount_fen, offline_count=s.offline_count + 1,
            log=(*s.log, (req.challenge, voucher))[-max(1, s.log_depth):],
        ))
        return voucher

    def _authenticate(self, cmd: CommandApdu) -> bytes:
        """Sign the terminal's challenge (an auth body, never a voucher): proof of the key, no state change."""
        req = AuthRequest.decode(cmd.data)
        if self.state.status != STATUS_ACTIVE:
            raise CardDecline(sw.SW_AUTH_METHOD_BLOCKED)
        return suites.sign(self._key, req.body(self.state.wallet_id))

    def _get_last(self, cmd: CommandApdu) -> bytes:
        if len(cmd.data) != CHALLENGE_SIZE:
            raise CardDecline(sw.SW_WRONG_LENGTH)
        log = self.state.log
        if not log or log[-1][0] != cmd.data:
            raise CardDecline(sw.SW_REFERENCED_DATA_NOT_FOUND)
        return log[-1][1]

    def _recover(self, cmd: CommandApdu) -> bytes:
        """The logged vouchers whose challenge the terminal's filter admits (P1: positions per challenge, 1-8)."""
        if not 1 <= cmd.p1 <= CHALLENGE_SIZE // 2:
            raise CardDecline(sw.SW_WRONG_P1P2)
        s = self.state
        return Recovered(s.counter - len(s.log) + 1,
                         tuple(v for c, v in s.log if filter_admits(cmd.data, cmd.p1, c))).encode()

    def _load(self, cmd: CommandApdu) -> bytes:
        token = LoadToken.decode(cmd.data)
        s = self.state
        if s.status != STATUS_ACTIVE:
            raise CardDecline(sw.SW_AUTH_METHOD_BLOCKED)
        if token.wallet_id != s.wallet_id:
            raise CardDecline(sw.SW_SECURITY_STATUS, "token for another wallet")
        try:
            token.verify(self._issuer_public_key())
        except SignatureError as exc:
            raise CardDecline(sw.SW_SECURITY_STATUS, "token signature") from exc
        if token.load_counter <= s.load_counter:
            raise CardDecline(sw.SW_TOKEN_REPLAYED)
        if token.amount_fen <= 0:
            raise CardDecline(sw.SW_WRONG_DATA)
        new_balance = s.balance_fen + token.amount_fen
        if s.balance_max is not None and new_balance > s.balance_max:
            raise CardDecline(sw.SW_OVER_BALANCE_LIMIT)
        self._commit(s.evolve(balance_fen=new_balance, load_counter=token.load_counter,
                             offline_amount=0, offline_count=0))
        return new_balance.to_bytes(8, "big")

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _commit(self, new_state: CardState) -> None:
        if self._persist is not None:
            try:
                self._persist(new_state)
            except OSError as exc:
                raise CardDecline(sw.SW_MEMORY_FAILURE, f"could not persist: {exc}") from exc
        self.state = new_state

    def _issuer_public_key(self) -> ec.EllipticCurvePublicKey:
        if self._issuer_key is None:
            key = x509.load_der_x509_certificate(self.state.issuer_der).public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CardDecline(sw.SW_SECURITY_STATUS)
            self._issuer_key = key
        return self._issuer_key
