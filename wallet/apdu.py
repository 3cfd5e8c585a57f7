"""ISO 7816-4 command and response APDUs (short form) and the status words the wallet uses."""

from __future__ import annotations

from dataclasses import dataclass

from wallet.errors import ApduError as ApduError  # re-exported: what CommandApdu raises, for its callers

# Status words (ISO 7816-4 where one fits; 94xx are this wallet's proprietary decline codes).
SW_OK = 0x9000
SW_BYTES_REMAINING = 0x6100  # low byte: bytes still available through GET RESPONSE
SW_WRONG_LENGTH = 0x6700
SW_CHANNEL_NOT_SUPPORTED = 0x6881  # CLA names a logical channel other than the basic one
SW_SM_NOT_SUPPORTED = 0x6882  # CLA announces secure messaging
SW_CHAINING_NOT_SUPPORTED = 0x6884  # CLA announces command chaining
SW_SECURITY_STATUS = 0x6982
SW_AUTH_METHOD_BLOCKED = 0x6983
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_COMMAND_NOT_ALLOWED = 0x6986
SW_WRONG_DATA = 0x6A80
SW_FUNC_NOT_SUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6B00
SW_WRONG_LE = 0x6C00  # low byte: the exact Le to use
SW_REFERENCED_DATA_NOT_FOUND = 0x6A88
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_MEMORY_FAILURE = 0x6581
SW_INSUFFICIENT_BALANCE = 0x9401
SW_OVER_SINGLE_LIMIT = 0x9402
SW_OVER_DAILY_LIMIT = 0x9403
SW_OVER_OFFLINE_LIMIT = 0x9404
SW_OVER_BALANCE_LIMIT = 0x9405
SW_TOKEN_REPLAYED = 0x9406

SW_NAMES: dict[int, str] = {
    SW_OK: "success",
    SW_WRONG_LENGTH: "wrong length",
    SW_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW_SM_NOT_SUPPORTED: "secure messaging not supported",
    SW_CHAINING_NOT_SUPPORTED: "command chaining not supported",
    SW_SECURITY_STATUS: "security status not satisfied",
    SW_AUTH_METHOD_BLOCKED: "card blocked",
    SW_CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW_COMMAND_NOT_ALLOWED: "command not allowed",
    SW_WRONG_DATA: "incorrect data",
    SW_FUNC_NOT_SUPPORTED: "function not supported",
    SW_FILE_NOT_FOUND: "application not found",
    SW_WRONG_P1P2: "wrong P1/P2",
    SW_REFERENCED_DATA_NOT_FOUND: "referenced data not found",
    SW_INS_NOT_SUPPORTED: "instruction not supported",
    SW_CLA_NOT_SUPPORTED: "class not supported",
    SW_MEMORY_FAILURE: "memory failure",
    SW_INSUFFICIENT_BALANCE: "insufficient balance",
    SW_OVER_SINGLE_LIMIT: "over single-payment limit",
    SW_OVER_DAILY_LIMIT: "over daily limit",
    SW_OVER_OFFLINE_LIMIT: "over offline limit",
    SW_OVER_BALANCE_LIMIT: "over balance limit",
    SW_TOKEN_REPLAYED: "load token replayed",
}


# Every status word the wallet applet answers, with what it means there: the table docs/protocol.md shows (a test
# compares the two both ways, and another provokes each one from the applet). 61xx: xx more bytes.
APPLET_STATUS_WORDS: dict[int, str] = {
    SW_OK: "success",
    SW_BYTES_REMAINING: "xx more bytes: GET RESPONSE",
    SW_MEMORY_FAILURE: "state not persisted (PAY, LOAD: the card is as it was)",
    SW_WRONG_LENGTH: "wrong length (Lc or Le missing or of the wrong size)",
    SW_CHANNEL_NOT_SUPPORTED: "logical channel not supported (CLA names channel 1 to 19)",
    SW_SM_NOT_SUPPORTED: "secure messaging not supported (CLA announces it)",
    SW_CHAINING_NOT_SUPPORTED: "command chaining not supported (CLA bit 5)",
    SW_SECURITY_STATUS: "security status (a load token for another wallet or badly signed)",
    SW_AUTH_METHOD_BLOCKED: "card blocked",
    SW_CONDITIONS_NOT_SATISFIED: "conditions not satisfied (not selected, nothing pending, counter exhausted)",
    SW_WRONG_DATA: "incorrect data",
    SW_FILE_NOT_FOUND: "application not found (SELECT of another AID; the selection stays as it was)",
    SW_REFERENCED_DATA_NOT_FOUND: "referenced data not found (GET LAST TRANSACTION)",
    SW_WRONG_P1P2: "wrong P1/P2",
    SW_INS_NOT_SUPPORTED: "instruction not supported",
    SW_CLA_NOT_SUPPORTED: "class not supported",
    SW_INSUFFICIENT_BALANCE: "insufficient balance",
    SW_OVER_SINGLE_LIMIT: "over the single-payment limit",
    SW_OVER_DAILY_LIMIT: "over the daily limit",
    SW_OVER_OFFLINE_LIMIT: "over an offline limit (single, cumulative or count)",
    SW_OVER_BALANCE_LIMIT: "over the balance cap (LOAD)",
    SW_TOKEN_REPLAYED: "load token replayed",
}


def class_status(cla: int) -> int | None:
    """What a card without logical channels, secure messaging or command chaining answers to ``cla`` (ISO 7816-4
    section 5.4.1), or None for the two classes it serves: ``00`` (interindustry) and ``80`` (proprietary, coded
    like the first interindustry class). Channel is checked before secure messaging, then chaining."""
    if cla == 0xFF or 0x20 <= cla <= 0x3F:  # invalid; RFU
        return SW_CLA_NOT_SUPPORTED
    if cla & 0x40:  # further interindustry: channels 4 to 19 (b4-b1), secure messaging b6, chaining b5
        if cla & 0x80:
            return SW_CLA_NOT_SUPPORTED
        return SW_CHANNEL_NOT_SUPPORTED
    if cla & 0x03:  # first interindustry (and proprietary 8x): channel b2-b1
        return SW_CHANNEL_NOT_SUPPORTED
    if cla & 0x0C:  # secure messaging b4-b3
        return SW_SM_NOT_SUPPORTED
    if cla & 0x10:  # command chaining b5
        return SW_CHAINING_NOT_SUPPORTED
    if cla & 0x60:
        return SW_CLA_NOT_SUPPORTED
    return None


def sw_name(sw: int) -> str:
    """A short English name for a status word."""
    if sw & 0xFF00 == SW_BYTES_REMAINING:
        return f"{sw & 0xFF or 256} bytes remaining"
    if sw & 0xFF00 == SW_WRONG_LE:
        return f"wrong Le, use {sw & 0xFF}"
    return SW_NAMES.get(sw, "unknown status")


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A short command APDU: CLA INS P1 P2 [Lc data] [Le]. ``le`` is None (absent) or 1..256."""

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.cla <= 0xFF and 0 <= self.ins <= 0xFF and 0 <= self.p1 <= 0xFF and 0 <= self.p2 <= 0xFF):
            bad = next(n for n in ("cla", "ins", "p1", "p2") if not 0 <= getattr(self, n) <= 0xFF)
            raise ApduError(f"{bad} out of range")
        if len(self.data) > 255:
            raise ApduError("command data longer than 255 bytes needs an extended APDU")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ApduError("Le out of range")

    def to_bytes(self) -> bytes:
        """Serialize to the bytes sent over the air."""
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        return out

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Parse a short APDU (cases 1-4); anything else raises :class:`ApduError`."""
        if len(raw) < 4:
            raise ApduError("APDU shorter than its 4-byte header")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        if not body:
            return _command(cla, ins, p1, p2, b"", None)
        if len(body) == 1:
            return _command(cla, ins, p1, p2, b"", body[0] or 256)
        lc = body[0]
        if lc == 0:
            raise ApduError("extended-length APDUs are not supported")
        if len(body) == 1 + lc:
            return _command(cla, ins, p1, p2, bytes(body[1:]), None)
        if len(body) == 2 + lc:
            return _command(cla, ins, p1, p2, bytes(body[1:-1]), body[-1] or 256)
        raise ApduError(f"Lc {lc} does not match the {len(body) - 1} bytes that follow")


_set = object.__setattr__


def _command(cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> CommandApdu:
    """A parsed command, built without ``__post_init__``: bytes off the air are in range by construction (header
    bytes, at most 255 data bytes counted by one Lc byte, Le 1..256)."""
    cmd = object.__new__(CommandApdu)
    _set(cmd, "cla", cla)
    _set(cmd, "ins", ins)
    _set(cmd, "p1", p1)
    _set(cmd, "p2", p2)
    _set(cmd, "data", data)
    _set(cmd, "le", le)
    return cmd


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data followed by SW1 SW2."""

    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduError("response shorter than its status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))
