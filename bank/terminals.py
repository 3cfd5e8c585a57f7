"""Terminal provisioning: certify a terminal's key for the merchant it is configured under; revoke it."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, insert, select, update

from bank.clock import now_ms
from bank.schema import terminals
from bank.store import Store
from wallet.errors import InvalidInput
from wallet.ids import check_terminal_id
from wallet.pki import OperatorPki, cert_der
from wire.errors import BadRequest, Forbidden, NotFound
from wire.models import ProvisionAnswer, TerminalStatus


class Terminals:
    """The terminals on file; ``terminal_merchants`` (terminal id -> merchant id) says which may be provisioned."""

    def __init__(self, store: Store, pki: OperatorPki, terminal_merchants: Mapping[str, str]) -> None:
        self.store = store
        self.pki = pki
        self.terminal_merchants = terminal_merchants

    def provision(self, terminal_id: str, public_key_pem: bytes) -> ProvisionAnswer:
        """Certify a terminal's key and put it on file. Returns the certificate and chain as PEM text."""
        try:
            check_terminal_id(terminal_id)
        except InvalidInput as exc:
            raise BadRequest(str(exc)) from None
        merchant_id = self.terminal_merchants.get(terminal_id)
        if merchant_id is None:
            raise NotFound(f"terminal {terminal_id} is not in the operator's merchant list", "unknown_terminal")
        try:
            key = serialization.load_pem_public_key(public_key_pem)
        except ValueError as exc:
            raise BadRequest(f"public key does not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise BadRequest("terminal key must be EC P-256")
        cert = self.pki.terminal_ca.issue_terminal_cert(terminal_id, merchant_id, key)
        der = cert_der(cert)

        def run(conn: Connection) -> None:
            row = conn.execute(select(terminals.c.status).where(terminals.c.terminal_id == terminal_id)).first()
            if row is not None and row.status == "revoked":
                raise Forbidden(f"terminal {terminal_id} is revoked", "terminal_revoked")
            if row is None:
                conn.execute(insert(terminals).values(terminal_id=terminal_id, merchant_id=merchant_id, cert_der=der,
                                                      status="active", created_ms=now_ms()))
            else:
                conn.execute(update(terminals).where(terminals.c.terminal_id == terminal_id)
                             .values(cert_der=der, merchant_id=merchant_id))

        self.store.write(run)
        pem = serialization.Encoding.PEM
        return ProvisionAnswer(terminal_id=terminal_id, merchant_id=merchant_id,
                               certificate=cert.public_bytes(pem).decode(),
                               chain=self.pki.terminal_ca.cert.public_bytes(pem).decode(),
                               root=self.pki.root.cert.public_bytes(pem).decode())

    def revoke(self, terminal_id: str) -> TerminalStatus:
        def run(conn: Connection) -> int:
            return conn.execute(update(terminals).where(terminals.c.terminal_id == terminal_id)
                                .values(status="revoked")).rowcount

        if not self.store.write(run):
            raise NotFound(f"no terminal {terminal_id}", "unknown_terminal")
        return TerminalStatus(terminal_id=terminal_id, status="revoked")
