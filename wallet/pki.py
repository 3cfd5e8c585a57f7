"""The operator's certificate authorities: a root certifying a wallet CA and a terminal CA, kept under one directory,
and the certificates they issue (verified by :mod:`wallet.certs`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wallet import clock
from wallet.certs import OID_KP_TERMINAL, OID_KP_WALLET, OID_WALLET_TIER
from wallet.files import write_atomic
from wallet.keys import key_from_pem, key_to_pem, new_key


def _now() -> dt.datetime:
    return clock.now()


def _name(cn: str, serial: str | None = None, org_id: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ecny-pos demo operator"),
             x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    if org_id:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, org_id))
    return x509.Name(attrs)


@dataclass
class CertificateAuthority:
    """A CA: its key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create_root(cls, name: str = "Demo e-CNY Operator Root CA", years: int = 20,
                    now: dt.datetime | None = None) -> CertificateAuthority:
        """A self-signed root, valid from a day before ``now`` (default: the clock) for ``years``."""
        key = new_key()
        subject = _name(name)
        now = now or _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def create_sub_ca(self, name: str, years: int = 10, now: dt.datetime | None = None) -> CertificateAuthority:
        """An issuing CA certified by this one, valid from a day before ``now`` (default: the clock)."""
        key = new_key()
        now = now or _now()
        cert = (
            self._builder(_name(name), key.public_key(), now - dt.timedelta(days=1),
                          now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return CertificateAuthority(key, cert)

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 not_before: dt.datetime, not_after: dt.datetime) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )

    def issue_wallet_cert(self, wallet_id: str, tier: int, public_key: ec.EllipticCurvePublicKey,
                          not_before: dt.datetime | None = None,
                          not_after: dt.datetime | None = None) -> x509.Certificate:
        """Certify a card's key for ``wallet_id`` at ``tier`` (valid five years unless told otherwise)."""
        not_before = not_before or _now() - dt.timedelta(minutes=5)
        not_after = not_after or not_before + dt.timedelta(days=5 * 365)
        return (
            self._builder(_name(f"e-CNY wallet {wallet_id}", serial=wallet_id), public_key, not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([OID_KP_WALLET]), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_WALLET_TIER, bytes([0x02, 0x01, tier])), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue_terminal_cert(self, terminal_id: str, merchant_id: str, public_key: ec.EllipticCurvePublicKey,
                            years: int = 5, now: dt.datetime | None = None) -> x509.Certificate:
        """Certify a terminal's key from five minutes before ``now`` (default: the clock); the merchant id rides in
        organizationIdentifier."""
        now = now or _now()
        return (
            self._builder(_name(f"terminal {terminal_id}", serial=terminal_id, org_id=merchant_id), public_key,
                          now - dt.timedelta(minutes=5), now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([OID_KP_TERMINAL, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def save(self, directory: Path, stem: str) -> None:
        """Write ``stem.key`` (mode 0600) and ``stem.pem`` atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / f"{stem}.key", key_to_pem(self.key), mode=0o600)
        write_atomic(directory / f"{stem}.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    @classmethod
    def load(cls, directory: Path, stem: str) -> CertificateAuthority:
        key = key_from_pem((directory / f"{stem}.key").read_bytes())
        cert = x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())
        return cls(key, cert)


@dataclass
class OperatorPki:
    """The operator's three CAs, kept under one directory."""

    root: CertificateAuthority
    wallet_ca: CertificateAuthority
    terminal_ca: CertificateAuthority

    @classmethod
    def create(cls, name: str = "Demo e-CNY Operator", now: dt.datetime | None = None) -> OperatorPki:
        """A new root and its two issuing CAs, all valid from a day before ``now`` (default: the clock)."""
        root = CertificateAuthority.create_root(f"{name} Root CA", now=now)
        return cls(root, root.create_sub_ca(f"{name} Wallet CA", now=now),
                   root.create_sub_ca(f"{name} Terminal CA", now=now))

    @classmethod
    def load_or_create(cls, directory: Path) -> OperatorPki:
        if (directory / "root.pem").exists():
            return cls(*(CertificateAuthority.load(directory, s) for s in ("root", "wallet-ca", "terminal-ca")))
        pki = cls.create()
        pki.wallet_ca.save(directory, "wallet-ca")
        pki.terminal_ca.save(directory, "terminal-ca")
        pki.root.save(directory, "root")  # last: its presence marks a complete set
        return pki


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
