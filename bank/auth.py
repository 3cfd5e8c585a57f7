"""Who is calling: terminals by their signed requests (see :mod:`wire.signing`) and their nonces, the back office
by its bearer token."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, bindparam, select

from bank import sql
from bank.clock import now_ms
from bank.schema import nonces, terminals
from bank.store import Store
from wallet import clock, suites
from wallet.certs import verify_terminal_certificate
from wallet.errors import CertificateError, SignatureError
from wallet.pki import OperatorPki, cert_der
from wire import signing
from wire.errors import Forbidden, Unauthenticated

NONCE_PRUNE_MS = 60_000  # how often old nonces are deleted
H_TERMINAL, H_TIME, H_NONCE, H_SIGNATURE, H_CORRECTION = (h.lower() for h in (
    signing.H_TERMINAL, signing.H_TIME, signing.H_NONCE, signing.H_SIGNATURE, signing.H_CORRECTION))
CLOCK_SKEW = "clock_skew"
_TERMINAL_ID = re.compile(r"[A-Z0-9]{8}")
_NONCE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """An authenticated terminal. ``pending_nonce`` (nonce, time) is set when the request's nonce is still to be
    recorded, in the transaction of what the request changes (see :meth:`Authenticator.authenticate`)."""

    terminal_id: str
    merchant_id: str
    pending_nonce: tuple[str, int] | None = None
    skew_ms: int = 0  # how far the terminal's own clock is ahead of the operator's, measured at this request
    # The denylist version the terminal had when it took the vouchers of this upload (signed in its query); 0: none
    # declared (taken as before any revocation). See bank.double_spend.
    denylist_version: int = 0


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A terminal request whose headers passed :meth:`Authenticator.precheck`; its body is still to be checked."""

    terminal_id: str
    merchant_id: str
    key: ec.EllipticCurvePublicKey
    time_ms: int
    nonce: str
    signature: bytes
    correction_ms: int = 0
    skew_ms: int = 0


def replayed() -> Unauthenticated:
    return Unauthenticated("request replayed (nonce already used)", "replayed_request")


class Authenticator:
    """Checks terminal request signatures against the certificates on file, and the back-office token."""

    def __init__(self, store: Store, pki: OperatorPki, admin_token: str | None) -> None:
        self.store = store
        self.pki = pki
        self.admin_token = admin_token
        self.roots = (cert_der(pki.root.cert),)
        self._terminal_keys: dict[tuple[str, bytes], ec.EllipticCurvePublicKey] = {}
        self._last_prune = 0

    def check_admin(self, token: str | None) -> None:
        """Raise :class:`Unauthenticated` unless ``token`` is the back-office token (compared as UTF-8 bytes, so any
        header text is a wrong token, never an error)."""
        if not self.admin_token or not token or not secrets.compare_digest(
                token.encode("utf-8", "surrogateescape"), self.admin_token.encode()):
            raise Unauthenticated("admin token missing or wrong", "bad_admin_token")

    def precheck(self, headers: Mapping[str, str]) -> PendingRequest:
        """Everything about a signed request that its headers alone decide, before its body is read: the headers
        are there and well formed, the terminal is on file and active, its certificate holds, the time is within
        the skew and the nonce is not on file. Raise :class:`Unauthenticated` or :class:`Forbidden`."""
        tid = headers.get(H_TERMINAL, "")
        nonce = headers.get(H_NONCE, "")
        if not tid or not nonce or H_SIGNATURE not in headers or H_TIME not in headers:
            raise Unauthenticated("request is not signed by a terminal", "unsigned_request")
        if not _TERMINAL_ID.fullmatch(tid):
            raise Unauthenticated("terminal id header must be 8 characters, A-Z and 0-9", "unknown_terminal")
        if not _NONCE.fullmatch(nonce):
            raise Unauthenticated("nonce must be 32 lowercase hex digits", "bad_nonce")
        time_text = headers[H_TIME]
        try:
            if not time_text.isascii() or not time_text.isdigit() or len(time_text) > 15:
                raise ValueError(time_text)
            t = int(time_text)
            correction = signing.parse_correction(headers[H_CORRECTION]) if H_CORRECTION in headers else 0
            sig = signing.decode_signature(headers[H_SIGNATURE])
        except ValueError:
            raise Unauthenticated("malformed time or signature header", "bad_request_signature") from None

        def look(conn: Connection) -> tuple[Any, bool]:
            row = conn.execute(select(terminals).where(terminals.c.terminal_id == tid)).first()
            used = conn.execute(select(nonces.c.nonce).where(
                nonces.c.terminal_id == tid, nonces.c.nonce == nonce)).first() is not None
            return row, used

        row, used = self.store.read(look)
        if row is None:
            raise Unauthenticated(f"unknown terminal {tid!r}", "unknown_terminal")
        if row.status != "active":
            raise Forbidden(f"terminal {tid} is revoked", "terminal_revoked")
        key = self._terminal_key(tid, row.cert_der)
        now = now_ms()
        if abs(now - t) > signing.MAX_SKEW_MS:
            raise Unauthenticated(f"request time {t} is {(t - now) / 60_000:+.1f} min from the operator's clock "
                                  f"{now}: correct the terminal's clock by the {signing.H_OPERATOR_TIME} of this "
                                  f"answer", CLOCK_SKEW)
        if used:
            raise replayed()
        return PendingRequest(tid, row.merchant_id, key, t, nonce, sig, correction, (t - correction) - now)

    def verify(self, pending: PendingRequest, method: str, path: str, query: str, body: bytes,
               record_nonce: bool = True) -> TerminalRecord:
        """Check the request's signature over its body; raise :class:`Unauthenticated`.

        The request's nonce is recorded durably before this returns, unless ``record_nonce`` is False: then it comes
        back as ``pending_nonce``, for the settlement to record in the batch's own transaction (one durable commit
        per batch instead of two). A replay racing its original is then refused when it commits, and changes
        nothing."""
        p = pending
        try:
            suites.verify(p.key, signing.signing_string(method, path, query, p.time_ms, p.nonce, body,
                                                        p.correction_ms), p.signature, suites.DEFAULT_SUITE)
        except SignatureError:
            raise Unauthenticated(f"request signature does not verify for terminal {p.terminal_id}",
                                  "bad_request_signature") from None
        if not record_nonce:
            return TerminalRecord(p.terminal_id, p.merchant_id, (p.nonce, p.time_ms), p.skew_ms)
        reconnected: list[bool] = []
        self.store.write(lambda conn: self.remember_nonce(conn, p.terminal_id, p.nonce, p.time_ms,
                                                          own_replay=bool(reconnected)),
                         on_reconnect=lambda: reconnected.append(True))
        return TerminalRecord(p.terminal_id, p.merchant_id, skew_ms=p.skew_ms)

    def authenticate(self, headers: Mapping[str, str], method: str, path: str, query: str, body: bytes,
                     record_nonce: bool = True) -> TerminalRecord:
        """:meth:`precheck` then :meth:`verify` (``headers`` by lowercase name)."""
        return self.verify(self.precheck(headers), method, path, query, body, record_nonce)

    def remember_nonce(self, conn: Connection, tid: str, nonce: str, t: int, own_replay: bool = False) -> None:
        """Record a request's nonce in the caller's transaction; :class:`Unauthenticated` if it is on file, unless
        ``own_replay``: the transaction is run again after a dropped connection, and an earlier attempt of this very
        request may have committed it."""
        if sql.execute(conn, "nonce", lambda: sql.insert_ignore(conn, nonces).values(
                terminal_id=bindparam("t"), nonce=bindparam("n"), time_ms=bindparam("ms")),
                {"t": tid, "n": nonce, "ms": t}).rowcount != 1 and not own_replay:
            raise replayed()
        now = now_ms()
        if now - self._last_prune > NONCE_PRUNE_MS:
            self._last_prune = now
            conn.execute(nonces.delete().where(nonces.c.time_ms < now - 3 * signing.MAX_SKEW_MS))

    def _terminal_key(self, tid: str, der: bytes) -> ec.EllipticCurvePublicKey:
        key = self._terminal_keys.get((tid, der))
        if key is None:
            try:
                info = verify_terminal_certificate(der, (cert_der(self.pki.terminal_ca.cert),), self.roots,
                                                   clock.now())
            except CertificateError as exc:
                raise Forbidden(f"terminal certificate refused: {exc}", "terminal_certificate") from None
            if info.terminal_id != tid:
                raise Forbidden("terminal certificate names another terminal", "terminal_certificate")
            key = info.public_key
            self._terminal_keys[(tid, der)] = key
        return key
