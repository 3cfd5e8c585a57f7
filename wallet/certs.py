"""The operator's certificate authority and certificate-chain verification (X.509 through ``cryptography``).

Chain: the operator root CA certifies two issuing CAs, one for wallets and one for terminals. A wallet certificate
carries the wallet id (subject serialNumber), the KYC tier (a private extension) and the card's P-256 public key.
Verification raises :class:`CertificateError` with a decline reason code; it never returns a bool.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from wallet import tlv
from wallet.errors import CertificateError, EncodingError

OID_ARC = "1.3.6.1.4.1.64321"  # private arc of the ecny-pos simulator
OID_WALLET_TIER = ObjectIdentifier(f"{OID_ARC}.1.1")
OID_KP_WALLET = ObjectIdentifier(f"{OID_ARC}.2.1")
OID_KP_TERMINAL = ObjectIdentifier(f"{OID_ARC}.2.2")
UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class WalletCertInfo:
    """What a verified wallet certificate says."""

    wallet_id: str
    tier: int
    public_key: ec.EllipticCurvePublicKey
    not_before: dt.datetime
    not_after: dt.datetime
    public_point: bytes  # the same key as an uncompressed P-256 point (X9.62, 65 bytes)


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
# a P-256 SubjectPublicKeyInfo's content up to the key: id-ecPublicKey, prime256v1, then a BIT STRING of 66 bytes
# with no unused bits (an uncompressed point follows: 04, X, Y)
_P256_SPKI_HEAD = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107034200")


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
    spki: bytes  # the SubjectPublicKeyInfo's content (algorithm and key)


def _der_fields(der: bytes) -> tuple[bytes, bytes, bytes, bytes, dict[bytes, bytes], bytes]:
    """The TBS bytes, the signature, the issuer and subject Names (DER), the extensions and the SubjectPublicKeyInfo's
    content of a DER certificate, each extension kept whole (decode it with :func:`_extension_value`): a tap reads
    two of them, by the OID at their head."""
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
            extensions, fields[5][1])


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
        tbs, signature, issuer, subject, extensions, spki = _der_fields(der)
    except (EncodingError, IndexError, ValueError) as exc:
        raise CertificateError("bad_certificate", "certificate fields do not parse") from exc
    return _Parsed(cert, tbs, signature, subject, issuer, extensions, spki)


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
    spki, head = parsed.spki, len(_P256_SPKI_HEAD)
    if len(spki) == head + 65 and spki[head] == 0x04 and spki.startswith(_P256_SPKI_HEAD):
        point = spki[head:]  # as the certificate carries it (the key parsed from it above)
    else:  # another encoding of the point (compressed, say)
        point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return WalletCertInfo(serial, raw[2], key, *_validity(leaf_der), point)


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
