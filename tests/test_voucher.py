"""Vouchers: canonical encoding, signatures, and every byte flip rejected; certificate chains."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.certs import chain_validity, verify_wallet_certificate
from wallet.errors import CertificateError, EncodingError, SignatureError
from wallet.issuance import issue_card
from wallet.keys import new_key
from wallet.pki import OperatorPki, cert_der
from wallet.voucher import CNY, Voucher, VoucherBody

KEY = new_key()
OTHER = new_key()
BODY = VoucherBody("0991000000000008", 7, 1230, CNY, "320508000000101", "CMGQ0001", os.urandom(16),
                   1_790_000_000_000, 98_770)
RAW = Voucher.sign(BODY, KEY).encode()


def test_round_trip_and_id() -> None:
    v = Voucher.decode(RAW)
    assert v.body == BODY
    assert v.voucher_id == "0991000000000008-00000007"
    v.verify(KEY.public_key())


def test_signature_by_another_key_fails() -> None:
    with pytest.raises(SignatureError):
        Voucher.decode(RAW).verify(OTHER.public_key())


def test_unknown_suite_fails() -> None:
    body = dataclasses.replace(BODY, suite=9)
    with pytest.raises(SignatureError):
        Voucher(body, b"\x00" * 64).verify(KEY.public_key())


@pytest.mark.parametrize("index", range(len(RAW)))
def test_every_byte_flip_is_rejected(index: int) -> None:
    flipped = bytearray(RAW)
    flipped[index] ^= 0x01
    with pytest.raises((EncodingError, SignatureError)):
        Voucher.decode(bytes(flipped)).verify(KEY.public_key())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(RAW) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_whatever_decodes_is_canonical(edits: list[tuple[int, int]]) -> None:
    """Any bytes a voucher decodes from are the bytes it encodes to (the decoder keeps them as the signed bytes)."""
    data = bytearray(RAW)
    for index, value in edits:
        data[index] = value
    try:
        v = Voucher.decode(bytes(data))
    except EncodingError:
        return
    assert v.encode() == bytes(data)
    assert v.body._encode() == v.body.encode()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_garbage_raises_only_encoding_error(data: bytes) -> None:
    with contextlib.suppress(EncodingError):
        Voucher.decode(data)


def test_non_canonical_length_refused() -> None:
    # Re-encode the outer length in long form: same content, not canonical.
    assert RAW[1] == 0x81
    inner = RAW[3:]
    longer = bytes([0x70, 0x82, 0x00, len(inner)]) + inner
    with pytest.raises(EncodingError):
        Voucher.decode(longer)


# Certificate time is explicit: the CAs and certificates are issued at ISSUED_AT and checked at CHECKED_AT, neither
# read from the clock, so these tests mean the same whenever (and however long after collection) they run.
ISSUED_AT = dt.datetime(2026, 5, 1, 1, 30, tzinfo=dt.UTC)
CHECKED_AT = ISSUED_AT + dt.timedelta(days=30)
PKI = OperatorPki.create(now=ISSUED_AT)


def _wallet_cert(pki: OperatorPki, **kw) -> bytes:
    kw.setdefault("not_before", ISSUED_AT)
    return cert_der(pki.wallet_ca.issue_wallet_cert("0991000000000008", 4, new_key().public_key(), **kw))


def _terminal_cert(pki: OperatorPki) -> bytes:
    return cert_der(pki.terminal_ca.issue_terminal_cert("CMGQ0001", "320508000000101", new_key().public_key(),
                                                        now=ISSUED_AT))


def test_wallet_chain_verifies_to_the_root() -> None:
    info = verify_wallet_certificate(_wallet_cert(PKI), [cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)],
                                     CHECKED_AT)
    assert (info.wallet_id, info.tier) == ("0991000000000008", 4)


def test_the_public_point_read_from_the_der_is_the_keys() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    for _ in range(20):
        info = verify_wallet_certificate(_wallet_cert(PKI), [cert_der(PKI.wallet_ca.cert)],
                                         [cert_der(PKI.root.cert)], CHECKED_AT)
        assert info.public_point == info.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        assert len(info.public_point) == 65 and info.public_point[0] == 4


def test_foreign_ca_is_unknown_issuer_even_with_the_same_names() -> None:
    foreign = OperatorPki.create(now=ISSUED_AT)  # same subject names, other keys
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(_wallet_cert(foreign), [cert_der(foreign.wallet_ca.cert)],
                                  [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "unknown_issuer"


def test_missing_intermediate_is_unknown_issuer() -> None:
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(_wallet_cert(PKI), [], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "unknown_issuer"


def test_expired_and_not_yet_valid() -> None:
    day = dt.timedelta(days=1)
    der = _wallet_cert(PKI, not_before=CHECKED_AT - 10 * day, not_after=CHECKED_AT - day)
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(der, [cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "expired_certificate"
    der = _wallet_cert(PKI, not_before=CHECKED_AT + day, not_after=CHECKED_AT + 10 * day)
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(der, [cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "certificate_not_yet_valid"


def test_a_card_is_valid_from_five_minutes_before_its_issue_for_five_years() -> None:
    state = issue_card(PKI, "c0001", 4, 10_000, now=ISSUED_AT)
    chain = ([state.issuer_der], [cert_der(PKI.root.cert)])
    start = ISSUED_AT - dt.timedelta(minutes=5)
    info = verify_wallet_certificate(state.cert_der, *chain, start)
    assert (info.wallet_id, info.not_before, info.not_after) == (state.wallet_id, start,
                                                                 start + dt.timedelta(days=5 * 365))
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(state.cert_der, *chain, start - dt.timedelta(seconds=1))
    assert exc.value.reason == "certificate_not_yet_valid"


def test_an_expired_card_ended_the_day_before_its_issue() -> None:
    state = issue_card(PKI, "c0001", 4, 10_000, expired=True, now=ISSUED_AT)
    chain = ([state.issuer_der], [cert_der(PKI.root.cert)])
    assert chain_validity(state.cert_der, *chain)[1] == ISSUED_AT - dt.timedelta(days=1)
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(state.cert_der, *chain, ISSUED_AT)
    assert exc.value.reason == "expired_certificate"


def test_the_cas_are_valid_from_the_day_before_they_are_made() -> None:
    """A wallet certificate dated before its CAs is valid in the chain only once the CAs are."""
    day = dt.timedelta(days=1)
    der = _wallet_cert(PKI, not_before=ISSUED_AT - 3 * day)
    chain = ([cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)])
    assert chain_validity(der, *chain) == (ISSUED_AT - day, ISSUED_AT - 3 * day + 5 * 365 * day)
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(der, *chain, ISSUED_AT - 2 * day)
    assert exc.value.reason == "certificate_not_yet_valid"


def test_terminal_cert_is_not_a_wallet_cert() -> None:
    der = _terminal_cert(PKI)
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(der, [cert_der(PKI.terminal_ca.cert)], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "bad_certificate"


def test_garbage_certificate_is_bad_certificate() -> None:
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(b"\x30\x03\x02\x01\x01", [], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "bad_certificate"


def test_tampered_wallet_certificate_is_bad_certificate() -> None:
    der = bytearray(_wallet_cert(PKI))
    at = der.index(b"0991000000000008")  # the wallet id in the subject: change one digit
    der[at + 15] = ord("9")
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(bytes(der), [cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "bad_certificate"


def test_signed_bytes_read_from_the_der_are_the_certificates_own() -> None:
    """The chain check verifies the TBS bytes and signature read from the DER: the same as the library's."""
    from cryptography import x509

    from wallet.certs import _parsed

    for der in (_wallet_cert(PKI), cert_der(PKI.wallet_ca.cert), cert_der(PKI.root.cert),
                _terminal_cert(PKI)):
        cert = x509.load_der_x509_certificate(der)
        parsed = _parsed(der)
        assert (parsed.tbs, parsed.signature) == (cert.tbs_certificate_bytes, cert.signature)


def test_a_flipped_signature_bit_is_bad_certificate() -> None:
    der = bytearray(_wallet_cert(PKI))
    der[-5] ^= 0x01  # inside the signature's INTEGER s
    with pytest.raises(CertificateError) as exc:
        verify_wallet_certificate(bytes(der), [cert_der(PKI.wallet_ca.cert)], [cert_der(PKI.root.cert)], CHECKED_AT)
    assert exc.value.reason == "bad_certificate"
