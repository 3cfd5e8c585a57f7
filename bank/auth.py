"""Who is calling: terminals by their signed requests (see :mod:`wire.signing`) and their nonces, the back office
by its bearer token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, bindparam, select

from bank import sql
from bank.clock import now_ms
from bank.schema import nonces, read_only, terminals
from bank.store import Store
from wallet import clock, suites
from wallet.certs import OperatorPki, cert_der, verify_terminal_certificate
from wallet.errors import CertificateError, SignatureError
from wire import signing
from wire.errors import Forbidden, Unauthenticated

NONCE_PRUNE_MS = 60_000  # how often old nonces are deleted


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """An authenticated terminal. ``pending_nonce`` (nonce, time) is set when the request's nonce is still to be
    recorded, in the transaction of what the request changes (see :meth:`Authenticator.authenticate`)."""

    terminal_id: str
    merchant_id: str
    pending_nonce: tuple[str, int] | None = None


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
        """Raise :class:`Unauthenticated` unless ``token`` is the back-office token."""
        if not self.admin_token or not token or not secrets.compare_digest(token, self.admin_token):
            raise Unauthenticated("admin token missing or wrong", "bad_admin_token")

    def authenticate(self, headers: dict[str, str], method: str, path: str, query: str,
                     body: bytes, defer_nonce: bool = False) -> TerminalRecord:
        """Check a signed request; raise :class:`Unauthenticated` or :class:`Forbidden`.

        The request's nonce is recorded durably before this returns, unless ``defer_nonce``: then it is only checked
        against those on file and comes back as ``pending_nonce``, for the settlement to record in the batch's own
        transaction (one durable commit per batch instead of two). A replay racing its original is then refused
        when it commits, and changes nothing.
        """
        tid = headers.get(signing.H_TERMINAL.lower(), "")
        nonce = headers.get(signing.H_NONCE.lower(), "")
        if not tid or not nonce or signing.H_SIGNATURE.lower() not in headers or signing.H_TIME.lower() not in headers:
            raise Unauthenticated("request is not signed by a terminal", "unsigned_request")
        if len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
            raise Unauthenticated("nonce must be 32 lowercase hex digits", "bad_nonce")
        try:
            t = int(headers[signing.H_TIME.lower()])
            sig = signing.decode_signature(headers[signing.H_SIGNATURE.lower()])
        except ValueError:
            raise Unauthenticated("malformed time or signature header", "bad_request_signature") from None
        with read_only(self.store.engine) as conn:
            row = conn.execute(select(terminals).where(terminals.c.terminal_id == tid)).first()
            used = defer_nonce and conn.execute(select(nonces.c.nonce).where(
                nonces.c.terminal_id == tid, nonces.c.nonce == nonce)).first() is not None
        if row is None:
            raise Unauthenticated(f"unknown terminal {tid!r}", "unknown_terminal")
        if row.status != "active":
            raise Forbidden(f"terminal {tid} is revoked", "terminal_revoked")
        key = self._terminal_key(tid, row.cert_der)
        if abs(now_ms() - t) > signing.MAX_SKEW_MS:
            raise Unauthenticated("request time is too far from the operator's clock", "stale_request")
        try:
            suites.verify(key, signing.signing_string(method, path, query, t, nonce, body), sig, suites.DEFAULT_SUITE)
        except SignatureError:
            raise Unauthenticated(f"request signature does not verify for terminal {tid}",
                                  "bad_request_signature") from None
        if used:
            raise replayed()
        if defer_nonce:
            return TerminalRecord(tid, row.merchant_id, (nonce, t))
        self.store.write_once(lambda conn: self.remember_nonce(conn, tid, nonce, t))
        return TerminalRecord(tid, row.merchant_id)

    def remember_nonce(self, conn: Connection, tid: str, nonce: str, t: int) -> None:
        """Record a request's nonce in the caller's transaction; :class:`Unauthenticated` if it is on file."""
        if sql.execute(conn, "nonce", lambda: sql.insert_ignore(conn, nonces).values(
                terminal_id=bindparam("t"), nonce=bindparam("n"), time_ms=bindparam("ms")),
                {"t": tid, "n": nonce, "ms": t}).rowcount != 1:
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
