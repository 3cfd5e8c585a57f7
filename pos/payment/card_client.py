"""The terminal's side of the wallet protocol: builds command APDUs, follows response chaining, keeps a trace."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ecny_nfc.reader import CardConnection, CardRemoved, ReaderError
from wallet import apdu as sw
from wallet.apdu import ApduError, CommandApdu
from wallet.certs import WalletCertInfo, find_issuer, verify_wallet_certificate
from wallet.errors import CertificateError, EcnyError, EncodingError
from wallet.protocol import (
    AID,
    CLA_ISO,
    CLA_PROPRIETARY,
    INS_AUTHENTICATE,
    INS_GET_LAST,
    INS_GET_RESPONSE,
    INS_LOAD,
    INS_NAMES,
    INS_PAY,
    INS_READ_INFO,
    INS_RECOVER,
    INS_SELECT,
    READ_INFO_FULL,
    READ_INFO_WITHOUT_ISSUER,
    AuthRequest,
    CardInfo,
    LoadToken,
    PayRequest,
    Recovered,
    log_filter,
)

MAX_CHAINED = 16 * 1024  # refuse a card that keeps chaining past any answer this protocol has


class CardStatusError(EcnyError):
    """The card answered a command with a status word other than 9000."""

    def __init__(self, command: str, status: int) -> None:
        super().__init__(f"{command}: card answered {status:04X} ({sw.sw_name(status)})")
        self.command = command
        self.status = status


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One APDU exchange: command, response (None when the card vanished), duration, and a one-line meaning."""

    command: bytes
    response: bytes | None
    ms: float

    @property
    def meaning(self) -> str:
        return describe(self.command, self.response)

    def to_json(self) -> dict[str, object]:
        return {"command": self.command.hex(" ").upper(),
                "response": None if self.response is None else self.response.hex(" ").upper(),
                "meaning": self.meaning, "ms": round(self.ms, 3)}


def describe(command: bytes, response: bytes | None) -> str:
    """A one-line meaning of an exchange, for the APDU trace."""
    name = INS_NAMES.get(command[1], f"INS {command[1]:02X}") if len(command) >= 2 else "?"
    if response is None:
        return f"{name}: no answer (card left the field)"
    if len(response) < 2:
        return f"{name}: malformed answer"
    status = int.from_bytes(response[-2:], "big")
    return f"{name}: {sw.sw_name(status)}, {len(response) - 2} bytes"


_SELECT = CommandApdu(CLA_ISO, INS_SELECT, 0x04, 0x00, AID, le=256).to_bytes()
_READ_INFO = {without: CommandApdu(CLA_PROPRIETARY, INS_READ_INFO,
                                   READ_INFO_WITHOUT_ISSUER if without else READ_INFO_FULL, le=256).to_bytes()
              for without in (False, True)}
_GET_RESPONSE = {le: CommandApdu(CLA_ISO, INS_GET_RESPONSE, le=le).to_bytes() for le in range(1, 257)}


class KnownIssuers:
    """The wallet-CA certificates a terminal holds: provisioned with it, and learnt from cards whose chain verified.

    Only a hint for reading cards: every chain is still verified to the terminal's roots."""

    LIMIT = 32

    def __init__(self, ders: Iterable[bytes] = ()) -> None:
        self._ders: list[bytes] = []
        for der in ders:
            self.learn(der)

    def __bool__(self) -> bool:
        return bool(self._ders)

    def find(self, leaf_der: bytes) -> bytes | None:
        return find_issuer(leaf_der, self._ders)

    def verify(self, info: CardInfo, issuer_der: bytes, roots: tuple[bytes, ...], at: dt.datetime) -> WalletCertInfo:
        """Verify the card's certificate through ``issuer_der`` to ``roots`` at ``at``, and that it names the wallet
        and tier the card reports; then remember the issuer. Raises :class:`CertificateError` (with its reason)."""
        cert = verify_wallet_certificate(info.cert_der, (issuer_der,), roots, at)
        if cert.wallet_id != info.wallet_id or cert.tier != info.tier:
            raise CertificateError("bad_certificate", "the certificate names another wallet or tier")
        self.learn(issuer_der)
        return cert

    def learn(self, der: bytes) -> None:
        """Remember an issuer certificate (one that verified); the oldest goes past ``LIMIT``."""
        if der in self._ders:
            return
        self._ders.append(der)
        del self._ders[: -self.LIMIT]


class WalletClient:
    """Talks to one wallet card through a reader connection."""

    def __init__(self, conn: CardConnection, trace: list[TraceEntry] | None = None) -> None:
        self.conn = conn
        self.trace = trace if trace is not None else []

    def _raw(self, command: bytes) -> tuple[bytes, int]:
        """One exchange: the answer's data and status word."""
        t0 = time.perf_counter()
        try:
            response = self.conn.transceive(command)
        except BaseException as exc:
            self.trace.append(TraceEntry(command, None, (time.perf_counter() - t0) * 1e3))
            if isinstance(exc, ReaderError) and not isinstance(exc, CardRemoved):
                # The reader failed mid-exchange: for the payment this is a card gone with its state unknown.
                raise CardRemoved(f"reader failed during the exchange: {exc}") from exc
            raise
        self.trace.append(TraceEntry(command, response, (time.perf_counter() - t0) * 1e3))
        if len(response) < 2:
            raise ApduError("response shorter than its status word")
        return response[:-2], response[-2] << 8 | response[-1]

    def exchange(self, cmd: CommandApdu) -> bytes:
        """Send ``cmd``, follow 61xx (GET RESPONSE) and 6Cxx (resend with Le); return data or raise."""
        return self._exchange(cmd.to_bytes())

    def _exchange(self, command: bytes) -> bytes:
        data, status = self._raw(command)
        if status & 0xFF00 == sw.SW_WRONG_LE:
            cmd = CommandApdu.parse(command)
            cmd = CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, le=(status & 0xFF) or 256)
            data, status = self._raw(cmd.to_bytes())
        while status & 0xFF00 == sw.SW_BYTES_REMAINING:
            if len(data) > MAX_CHAINED:
                break
            more, status = self._raw(_GET_RESPONSE[(status & 0xFF) or 256])
            data += more
        if status != sw.SW_OK:
            raise CardStatusError(INS_NAMES.get(command[1], f"INS {command[1]:02X}"), status)
        return data

    def select(self) -> bytes:
        return self._exchange(_SELECT)

    def read_info(self, without_issuer: bool = False) -> CardInfo:
        return CardInfo.decode(self._exchange(_READ_INFO[without_issuer]))

    def read_wallet(self, issuers: KnownIssuers) -> tuple[CardInfo, bytes]:
        """READ INFO and the certificate of the card's issuer. When the terminal holds that certificate the card
        leaves it out (two GET RESPONSEs fewer); a card from an issuer the terminal does not know yet, or an
        applet without the short form, is read in full. The issuer is not trusted for being here: the caller
        verifies the chain to its roots."""
        if issuers:
            try:
                info = self.read_info(without_issuer=True)
            except CardStatusError as exc:
                if exc.status != sw.SW_WRONG_P1P2:
                    raise
            else:
                issuer = issuers.find(info.cert_der)
                if issuer is not None:
                    return info, issuer
        info = self.read_info()
        if not info.issuer_der:
            raise EncodingError("wallet info: the issuer certificate is missing")
        return info, info.issuer_der

    def pay(self, request: PayRequest) -> bytes:
        return self.exchange(CommandApdu(CLA_PROPRIETARY, INS_PAY, data=request.encode(), le=256))

    def last_transaction(self, challenge: bytes) -> bytes:
        return self.exchange(CommandApdu(CLA_PROPRIETARY, INS_GET_LAST, data=challenge, le=256))

    def recover(self, challenges: list[bytes]) -> Recovered:
        """RECOVER: the card's logged vouchers for any of ``challenges`` (one APDU however many; a voucher whose
        challenge only passed the filter is the caller's to drop), and the first counter its log holds."""
        k, flt = log_filter(challenges)
        return Recovered.decode(self.exchange(CommandApdu(CLA_PROPRIETARY, INS_RECOVER, k, 0, flt, le=256)))

    def authenticate(self, request: AuthRequest) -> bytes:
        """The card's signature over ``request`` for its wallet id (verify it with the certified key)."""
        return self.exchange(CommandApdu(CLA_PROPRIETARY, INS_AUTHENTICATE, data=request.encode(), le=256))

    def load(self, token: LoadToken) -> int:
        data = self.exchange(CommandApdu(CLA_PROPRIETARY, INS_LOAD, data=token.encode(), le=256))
        return int.from_bytes(data, "big")
