"""The operator's certificate authority and certificate-chain verification (X.509 through ``cryptography``).

Chain: the operator root CA certifies two issuing CAs, one for wallets and one for terminals. A wallet certificate
carries the wallet id (subject serialNumber), the KYC tier (a private extension) and the card's P-256 public key.
Verification raises :class:`CertificateError` with a decline reason code; it never returns a bool.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from wallet import clock, tlv
from wallet.errors import CertificateError, EncodingError

OID_ARC = "1.3.6.1.4.1.64321"  # private arc of the ecny-pos simulator
OID_WALLET_TIER = ObjectIdentifier(f"{OID_ARC}.1.1")
OID_KP_WALLET = ObjectIdentifier(f"{OID_ARC}.2.1")
OID_KP_TERMINAL = ObjectIdentifier(f"{OID_ARC}.2.2")
UTC = dt.UTC


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("bad_certificate", "not an EC private key")
    return key


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


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that a crash leaves either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


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


@dataclass(frozen=True, slots=True)
class WalletCertInfo:
    """What a verified wallet certificate says."""

    wallet_id: str
    tier: int
    public_key: ec.EllipticCurvePublicKey
    not_before: dt.datetime
    not_after: dt.datetime


@functools.lru_cache(maxsize=8192)
def _parse(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError("bad_certificate", f"certificate does not parse: {exc}") from exc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def oid_der(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER (what follows tag 06 and the length)."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


_OID_SERIAL_NUMBER = oid_der(NameOID.SERIAL_NUMBER.dotted_string)
_OID_EKU = oid_der(x509.oid.ExtensionOID.EXTENDED_KEY_USAGE.dotted_string)
_OID_TIER = oid_der(OID_WALLET_TIER.dotted_string)
_OID_KP_WALLET = oid_der(OID_KP_WALLET.dotted_string)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A parsed certificate, with what the chain builder and the wallet checks read from its DER.

    ``cryptography`` parses and validates the certificate; the few fields a tap needs (the signed TBS bytes and the
    signature, the raw names, the subject's serialNumber, two extensions) are then read straight from the DER with
    the strict TLV decoder, which costs a fraction of building ``Name`` and ``Extension`` objects (or of
    ``tbs_certificate_bytes``, which encodes the TBS again) for every new card.
    """

    cert: x509.Certificate
    tbs: bytes  # the TBSCertificate, exactly as signed
    signature: bytes
    subject: bytes
    issuer: bytes
    extensions: dict[bytes, bytes]  # extnID (OID content octets) -> the whole Extension


def _der_fields(der: bytes) -> tuple[bytes, bytes, bytes, bytes, dict[bytes, bytes]]:
    """The TBS bytes, the signature, the issuer and subject Names (DER) and the extensions of a DER certificate,
    each extension kept whole (decode it with :func:`_extension_value`): a tap reads two of them, by the OID at
    their head."""
    (tbs_tag, tbs_value), _, (sig_tag, sig_value) = tlv.decode(tlv.decode_one(der, 0x30))
    if tbs_tag != 0x30 or sig_tag != 0x03 or not sig_value or sig_value[0] != 0:
        raise EncodingError("not a certificate")
    tbs = tlv.decode(tbs_value)
    fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs  # skip the explicit version
    extensions: dict[bytes, bytes] = {}
    for tag, value in fields[6:]:
        if tag != 0xA3:
            continue
        for ext_tag, ext in tlv.decode(tlv.decode_one(value, 0x30)):
            if ext_tag != 0x30 or len(ext) < 2 or ext[0] != 0x06 or ext[1] >= 0x80:
                raise EncodingError("malformed extension")
            oid = ext[2 : 2 + ext[1]]
            if oid in extensions:
                raise EncodingError("repeated extension")
            extensions[oid] = ext
    return (tlv.encode(0x30, tbs_value), sig_value[1:], tlv.encode(0x30, fields[2][1]), tlv.encode(0x30, fields[4][1]),
            extensions)


def _extension_value(ext: bytes) -> bytes:
    """The extnValue of one Extension (extnID, optional critical flag, OCTET STRING)."""
    parts = tlv.decode(ext)
    if not 2 <= len(parts) <= 3 or parts[-1][0] != 0x04 or (len(parts) == 3 and parts[1][0] != 0x01):
        raise EncodingError("malformed extension")
    return parts[-1][1]


def _name_attribute(name_der: bytes, oid: bytes) -> str | None:
    """The first value of attribute ``oid`` in a DER Name, as text."""
    head = bytes([0x06, len(oid)]) + oid
    for _, rdn in tlv.decode(tlv.decode_one(name_der, 0x30)):
        for _, atv in tlv.decode(rdn):
            if atv.startswith(head):
                (_, _), (_, value) = tlv.decode(atv)
                return value.decode("utf-8")
    return None


@functools.lru_cache(maxsize=8192)
def _parsed(der: bytes) -> _Parsed:
    cert = _parse(der)
    try:
        tbs, signature, issuer, subject, extensions = _der_fields(der)
    except (EncodingError, IndexError, ValueError) as exc:
        raise CertificateError("bad_certificate", "certificate fields do not parse") from exc
    return _Parsed(cert, tbs, signature, subject, issuer, extensions)


@functools.lru_cache(maxsize=64)
def _issuer_key(issuer_der: bytes) -> ec.EllipticCurvePublicKey | None:
    key = _parse(issuer_der).public_key()
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


@functools.lru_cache(maxsize=1024)
def _is_ca_der(der: bytes) -> bool:
    return _is_ca(_parse(der))


@functools.lru_cache(maxsize=4096)
def _verified_chain(leaf_der: bytes, intermediates: tuple[bytes, ...],
                    roots: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Verify the signatures and CA flags from leaf to a trusted root; return the chain (DER) leaf first.

    Pure in its arguments, so it is cached; so is each link, so a new card from a known issuer costs one
    signature verification (its own certificate), not one per link.
    """
    leaf = _parsed(leaf_der)
    pool = [(d, _parsed(d)) for d in intermediates]
    trusted = [(d, _parsed(d)) for d in roots]
    chain = [leaf_der]
    current, current_der = leaf, leaf_der
    for _ in range(len(pool) + 1):
        for root_der, root in trusted:
            if current.issuer == root.subject:
                try:
                    _check_link(current_der, root_der)
                except CertificateError:
                    continue  # same name, another key: not our root
                return (*chain, root_der)
        found = next(((d, p) for d, p in pool if p.subject == current.issuer and d not in chain), None)
        if found is None:
            break
        issuer_der, issuer = found
        if not _is_ca_der(issuer_der):
            raise CertificateError("bad_certificate", "issuer certificate is not a CA")
        _check_link(current_der, issuer_der)
        chain.append(issuer_der)
        current, current_der = issuer, issuer_der
    raise CertificateError("unknown_issuer",
                           f"no chain to a trusted root for {leaf.cert.subject.rfc4514_string()}")


_ECDSA_SIGNATURES = {
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}


@functools.lru_cache(maxsize=8)
def _ecdsa(algorithm: type[hashes.HashAlgorithm]) -> ec.ECDSA:
    return ec.ECDSA(algorithm())


@functools.lru_cache(maxsize=8192)
def _check_link(cert_der: bytes, issuer_der: bytes) -> None:
    """Raise unless ``issuer`` signed ``cert`` (cached: a successful check is a fact about the two byte strings).

    The issuer's EC key verifies the signature over the TBS bytes directly: the same check as
    ``verify_directly_issued_by`` for the ECDSA certificates this operator issues (the names are compared by the
    chain builder), and it lets other threads run meanwhile (the operator verifies batches on several threads).
    """
    parsed = _parsed(cert_der)
    cert = parsed.cert
    key = _issuer_key(issuer_der)
    algorithm = cert.signature_hash_algorithm
    if (key is None or cert.signature_algorithm_oid not in _ECDSA_SIGNATURES
            or algorithm is None):
        raise CertificateError("bad_certificate", "certificate is not signed with ECDSA by an EC issuer key")
    try:
        key.verify(parsed.signature, parsed.tbs, _ecdsa(type(algorithm)))
    except InvalidSignature as exc:
        raise CertificateError("bad_certificate", "certificate signature does not verify") from exc


def verify_chain(leaf_der: bytes, intermediates: list[bytes] | tuple[bytes, ...],
                 roots: list[bytes] | tuple[bytes, ...], at: dt.datetime) -> list[x509.Certificate]:
    """Verify ``leaf_der`` up to one of ``roots`` and check every certificate's validity at ``at``."""
    return [_parse(der) for der in _checked_chain(leaf_der, intermediates, roots, at)]


def _checked_chain(leaf_der: bytes, intermediates: list[bytes] | tuple[bytes, ...],
                   roots: list[bytes] | tuple[bytes, ...], at: dt.datetime) -> tuple[bytes, ...]:
    chain = _verified_chain(leaf_der, tuple(intermediates), tuple(roots))
    for der in chain:
        not_before, not_after = _validity(der)
        if at < not_before:
            raise CertificateError("certificate_not_yet_valid",
                                   f"{_parse(der).subject.rfc4514_string()} is valid only from {not_before}")
        if at > not_after:
            raise CertificateError("expired_certificate",
                                   f"{_parse(der).subject.rfc4514_string()} expired on {not_after}")
    return chain


def chain_validity(leaf_der: bytes, intermediates: list[bytes] | tuple[bytes, ...],
                   roots: list[bytes] | tuple[bytes, ...]) -> tuple[dt.datetime, dt.datetime]:
    """The window in which every certificate of the leaf's chain is valid (the chain's signatures are verified,
    cached as for :func:`verify_chain`; raises :class:`CertificateError` like it)."""
    windows = [_validity(der) for der in _verified_chain(leaf_der, tuple(intermediates), tuple(roots))]
    return max(w[0] for w in windows), min(w[1] for w in windows)


@functools.lru_cache(maxsize=8192)
def _validity(der: bytes) -> tuple[dt.datetime, dt.datetime]:
    cert = _parse(der)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


@functools.lru_cache(maxsize=4096)
def _wallet_info(leaf_der: bytes) -> WalletCertInfo:
    parsed = _parsed(leaf_der)
    try:
        serial = _name_attribute(parsed.subject, _OID_SERIAL_NUMBER)
        eku_value = _extension_value(parsed.extensions[_OID_EKU])
        eku = [oid for tag, oid in tlv.decode(tlv.decode_one(eku_value, 0x30)) if tag == 0x06]
        raw = _extension_value(parsed.extensions[_OID_TIER])
    except (KeyError, EncodingError, ValueError) as exc:
        raise CertificateError("bad_certificate", "not a wallet certificate") from exc
    if serial is None:
        raise CertificateError("bad_certificate", "not a wallet certificate")
    if _OID_KP_WALLET not in eku:
        raise CertificateError("bad_certificate", "certificate is not for a wallet")
    if len(raw) != 3 or raw[:2] != b"\x02\x01":
        raise CertificateError("bad_certificate", "wallet tier extension malformed")
    cert = parsed.cert
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError("bad_certificate", "wallet key is not P-256")
    return WalletCertInfo(serial, raw[2], key, *_validity(leaf_der))


def find_issuer(leaf_der: bytes, candidates: Iterable[bytes]) -> bytes | None:
    """The candidate CA certificate that issued the leaf (its subject is the leaf's issuer and its key signed the
    leaf), or None, also for a leaf that does not parse. The signature check is cached, so a chain verification
    that follows does not pay for it twice."""
    try:
        wanted = _parsed(leaf_der).issuer
    except CertificateError:
        return None
    for der in candidates:
        try:
            if _parsed(der).subject == wanted:
                _check_link(leaf_der, der)
                return der
        except CertificateError:
            continue
    return None


def verify_wallet_certificate(leaf_der: bytes, intermediates: list[bytes] | tuple[bytes, ...],
                              roots: list[bytes] | tuple[bytes, ...], at: dt.datetime) -> WalletCertInfo:
    """Verify a wallet certificate chain at ``at`` and return what the certificate says."""
    _checked_chain(leaf_der, intermediates, roots, at)
    return _wallet_info(leaf_der)


@dataclass(frozen=True, slots=True)
class TerminalCertInfo:
    terminal_id: str
    merchant_id: str
    public_key: ec.EllipticCurvePublicKey


def verify_terminal_certificate(leaf_der: bytes, intermediates: list[bytes] | tuple[bytes, ...],
                                roots: list[bytes] | tuple[bytes, ...], at: dt.datetime) -> TerminalCertInfo:
    """Verify a terminal certificate chain at ``at`` and return the terminal and merchant ids it names."""
    chain = verify_chain(leaf_der, intermediates, roots, at)
    cert = chain[0]
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        tid = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
        mid = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value
    except (x509.ExtensionNotFound, IndexError) as exc:
        raise CertificateError("bad_certificate", "not a terminal certificate") from exc
    if OID_KP_TERMINAL not in eku:
        raise CertificateError("bad_certificate", "certificate is not for a terminal")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError("bad_certificate", "terminal key is not EC")
    return TerminalCertInfo(str(tid), str(mid), key)
