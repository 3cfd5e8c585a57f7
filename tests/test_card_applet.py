"""The wallet applet: APDU handling, chaining, LOAD tokens, atomic persistence, fuzzed commands."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecny_nfc.mock import MockReader
from pos.payment.card_client import CardStatusError, KnownIssuers, WalletClient
from wallet import apdu as sw
from wallet.apdu import CommandApdu, ResponseApdu
from wallet.card import CHINA_TZ, CardState, WalletApplet, china_day, china_day_text
from wallet.certs import verify_wallet_certificate
from wallet.errors import ApduError
from wallet.issuance import issue_card
from wallet.pki import CertificateAuthority, OperatorPki, cert_der
from wallet.protocol import AID, INS_READ_INFO, LoadToken, PayRequest
from wallet.voucher import MAX_TIMESTAMP_MS

PKI = OperatorPki.create()


def _card(balance: int = 10_000, tier: int = 4) -> WalletApplet:
    return WalletApplet(issue_card(PKI, "c0001", tier, balance))


def _client(card: WalletApplet) -> WalletClient:
    reader = MockReader()
    reader.present(card)
    client = WalletClient(reader.connect(timeout=1))
    client.select()
    return client


def _token(card: WalletApplet, amount: int, counter: int | None = None, key=None) -> LoadToken:
    s = card.state
    return LoadToken(s.wallet_id, s.load_counter + 1 if counter is None else counter, amount,
                     time.time_ns() // 10**6).signed(key or PKI.wallet_ca.key)


def test_select_returns_fci_and_unknown_aid_is_not_found() -> None:
    card = _card()
    resp = ResponseApdu.parse(card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID, le=256).to_bytes()))
    assert resp.ok and AID in resp.data
    resp = ResponseApdu.parse(card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00\x00", le=256).to_bytes()))
    assert resp.sw == sw.SW_FILE_NOT_FOUND


def test_status_words_for_bad_commands() -> None:
    card = _card()
    assert card.process(bytes.fromhex("80CA000000"))[-2:] == b"\x69\x85"  # not selected
    card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID).to_bytes())
    assert card.process(bytes.fromhex("80EE0000"))[-2:] == b"\x6d\x00"
    assert card.process(bytes.fromhex("A0CA0000"))[-2:] == b"\x6e\x00"
    assert card.process(bytes.fromhex("80CA00"))[-2:] == b"\x67\x00"
    assert card.process(bytes.fromhex("80CA0200"))[-2:] == b"\x6b\x00"  # P1 02: no such form of READ INFO
    assert card.process(bytes.fromhex("80CA0001"))[-2:] == b"\x6b\x00"
    assert card.process(bytes.fromhex("80500100"))[-2:] == b"\x6b\x00"  # P1 01 means something to READ INFO only
    assert card.process(bytes.fromhex("00C0000000"))[-2:] == b"\x69\x85"  # nothing to get


def test_read_info_is_chained_and_reassembled() -> None:
    card = _card()
    client = _client(card)
    info = client.read_info()
    assert info == card.state.info()  # the answer, encoded straight from the card's state, says what info() says
    assert len(card.state.info().encode()) > 1000
    assert sum(1 for t in client.trace if "GET RESPONSE" in t.meaning) >= 4


def test_read_info_leaves_the_issuer_certificate_out_when_asked() -> None:
    card = _card()
    client = _client(card)
    short = client.read_info(without_issuer=True)
    assert short.issuer_der is None and short.cert_der == card.state.cert_der
    assert short == dataclasses.replace(client.read_info(), issuer_der=None) == card.state.info(with_issuer=False)
    assert len(short.encode()) < len(card.state.info().encode()) - 400


def test_read_wallet_uses_the_terminals_issuer_and_reads_in_full_for_an_unknown_one() -> None:
    card = _card()
    client = _client(card)
    issuers = KnownIssuers([cert_der(PKI.wallet_ca.cert)])
    info, issuer = client.read_wallet(issuers)
    assert issuer == card.state.issuer_der and info.issuer_der is None
    assert [t.command[2] for t in client.trace if t.command[1] == INS_READ_INFO] == [0x01]

    client = _client(card)
    other = KnownIssuers([cert_der(OperatorPki.create().wallet_ca.cert)])  # the same names, another key
    foreign = KnownIssuers([cert_der(CertificateAuthority.create_root("Another operator Wallet CA").cert)])
    info, issuer = client.read_wallet(foreign)
    assert issuer == card.state.issuer_der == info.issuer_der
    assert [t.command[2] for t in client.trace if t.command[1] == INS_READ_INFO] == [0x01, 0x00]
    # A CA certificate with the same name but another key did not sign the card: the card is read in full.
    client = _client(card)
    info, issuer = client.read_wallet(other)
    assert issuer == card.state.issuer_der == info.issuer_der
    assert [t.command[2] for t in client.trace if t.command[1] == INS_READ_INFO] == [0x01, 0x00]
    verify_wallet_certificate(info.cert_der, (issuer,), (cert_der(PKI.root.cert),), dt.datetime.now(dt.UTC))


def test_read_wallet_reads_in_full_from_an_applet_without_the_short_form() -> None:
    class OldApplet(WalletApplet):
        def process(self, raw: bytes) -> bytes:
            if raw[:3] == bytes([0x80, INS_READ_INFO, 0x01]):
                return b"\x6b\x00"
            return super().process(raw)

    card = OldApplet(_card().state)
    info, issuer = _client(card).read_wallet(KnownIssuers([cert_der(PKI.wallet_ca.cert)]))
    assert issuer == info.issuer_der == card.state.issuer_der


def test_load_credits_and_resets_offline_usage() -> None:
    card = _card(balance=1000)
    card.state.offline_count, card.state.offline_amount = 3, 900
    client = _client(card)
    assert client.load(_token(card, 5000)) == 6000
    assert card.state.balance_fen == 6000
    assert (card.state.offline_count, card.state.offline_amount) == (0, 0)
    assert card.state.load_counter == 1


def test_replayed_load_token_is_refused() -> None:
    card = _card(balance=1000)
    client = _client(card)
    token = _token(card, 5000)
    client.load(token)
    with pytest.raises(CardStatusError) as exc:
        client.load(token)
    assert exc.value.status == sw.SW_TOKEN_REPLAYED
    assert card.state.balance_fen == 6000


def test_foreign_or_tampered_token_is_refused() -> None:
    card = _card(balance=1000)
    client = _client(card)
    with pytest.raises(CardStatusError) as exc:
        client.load(_token(card, 5000, key=OperatorPki.create().wallet_ca.key))
    assert exc.value.status == sw.SW_SECURITY_STATUS
    t = _token(card, 5000)
    forged = LoadToken(t.wallet_id, t.load_counter, 500_000, t.timestamp_ms, t.signature)
    with pytest.raises(CardStatusError):
        client.load(forged)
    other = _card()
    with pytest.raises(CardStatusError):
        client.load(_token(other, 100))
    assert card.state.balance_fen == 1000 and card.state.load_counter == 0


def test_load_over_balance_cap_is_refused() -> None:
    card = _card(balance=1_000_000)  # tier 4 cap: 10,000 yuan
    with pytest.raises(CardStatusError) as exc:
        _client(card).load(_token(card, 1))
    assert exc.value.status == sw.SW_OVER_BALANCE_LIMIT


def test_failed_persist_leaves_the_card_unchanged() -> None:
    state = issue_card(PKI, "c0001", 4, 10_000)
    calls = []

    def broken(new_state) -> None:
        calls.append(new_state)
        raise OSError(28, "No space left on device")

    card = WalletApplet(state, persist=broken)
    client = _client(card)
    before = copy.deepcopy(card.state)
    with pytest.raises(CardStatusError) as exc:
        client.load(_token(card, 100))
    assert exc.value.status == sw.SW_MEMORY_FAILURE
    assert calls and card.state == before


def test_command_apdu_round_trip_and_errors() -> None:
    cmd = CommandApdu(0x80, 0x50, data=b"\x01\x02", le=256)
    assert CommandApdu.parse(cmd.to_bytes()) == cmd
    for bad in (b"", b"\x80\x50", b"\x80\x50\x00\x00\x05\x01", b"\x80\x50\x00\x00\x00\x00\x01"):
        with pytest.raises(ApduError):
            CommandApdu.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=262))
def test_a_parsed_command_is_a_valid_command_that_encodes_back(raw: bytes) -> None:
    """What parses is what the checked constructor builds, and it is sent as the same bytes."""
    try:
        cmd = CommandApdu.parse(raw)
    except ApduError:
        return
    assert cmd == CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, cmd.le)
    assert cmd.to_bytes() == raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=270),
    st.builds(lambda cla, ins, p1, p2, data: bytes([cla, ins, p1, p2, len(data)]) + data,
              st.sampled_from([0x00, 0x80, 0x84, 0xFF]),
              st.sampled_from([0xA4, 0xC0, 0xCA, 0x50, 0x52, 0x54, 0x88, 0x00]),
              st.integers(0, 255), st.integers(0, 255), st.binary(max_size=255)),
), max_size=6))
def test_fuzzed_apdus_never_crash_or_change_money(commands: list[bytes]) -> None:
    card = _card()
    before = copy.deepcopy(card.state)
    card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID).to_bytes())
    for raw in commands:
        out = card.process(raw)
        assert isinstance(out, bytes) and len(out) >= 2
    # Random bytes cannot forge a signed PAY request's effect beyond what PAY allows, nor a LOAD without a
    # valid token: the balance may only drop through a well-formed PAY, and never rise.
    assert card.state.balance_fen <= before.balance_fen
    assert card.state.load_counter == before.load_counter
    if card.state.balance_fen != before.balance_fen:
        assert card.state.counter > before.counter
    else:
        assert card.state.counter == before.counter


def test_pay_with_a_timestamp_past_the_calendar_is_wrong_data_not_a_crash() -> None:
    from wallet.protocol import PayRequest

    card = _card()
    card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID).to_bytes())
    req = PayRequest(100, 156, "320508000000101", "CMGQ0001", b"\x01" * 16, 2**63)
    out = ResponseApdu.parse(card.process(CommandApdu(0x80, 0x50, data=req.encode(), le=256).to_bytes()))
    assert out.sw == sw.SW_WRONG_DATA
    assert card.state.counter == 0 and card.state.balance_fen == 10_000


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.integers(-(10**12), MAX_TIMESTAMP_MS),
                 st.integers(-719_000, 2_932_000).map(lambda d: d * 86_400_000 - 8 * 3_600_000 + st_offset(d))))
def test_china_day_is_the_calendar_day_in_china_standard_time(ts: int) -> None:
    """Daily limits and business days follow the date in Beijing, to the millisecond at midnight."""
    d = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ts)).astimezone(CHINA_TZ).date()
    assert china_day(ts) == d.year * 10000 + d.month * 100 + d.day
    assert china_day_text(ts) == d.isoformat()


def st_offset(d: int) -> int:
    return (-1, 0, 1)[d % 3]  # the last millisecond of a day, midnight, the first millisecond after


def test_a_card_state_evolves_like_dataclasses_replace() -> None:
    state = CardState("c1", "0991000000000008", 2, "pem", b"c", b"i", balance_fen=5, extra={"k": 1})
    new = state.evolve(balance_fen=7, counter=3)
    assert new == dataclasses.replace(state, balance_fen=7, counter=3)
    assert (state.balance_fen, state.counter) == (5, 0)  # the original is untouched
    assert type(new) is CardState


def test_a_pay_timestamp_past_the_last_calendar_day_is_wrong_data() -> None:
    """The last instant with a day in China pays; one millisecond later the card answers 6A80, never fails."""
    card = _card()
    client = _client(card)
    req = PayRequest(100, 156, "320508000000101", "CMGQ0001", b"\1" * 16, MAX_TIMESTAMP_MS + 1)
    with pytest.raises(CardStatusError) as exc:
        client.pay(req)
    assert exc.value.status == sw.SW_WRONG_DATA
    assert card.state.counter == 0
    client.pay(dataclasses.replace(req, timestamp_ms=MAX_TIMESTAMP_MS))
    assert card.state.counter == 1


def test_authenticate_proves_the_key_and_changes_nothing() -> None:
    from wallet.certs import _wallet_info
    from wallet.errors import EncodingError, SignatureError
    from wallet.protocol import AuthRequest
    from wallet.voucher import VoucherBody

    card = _card()
    client = _client(card)
    before = copy.deepcopy(card.state)
    req = AuthRequest("HQGT0001", b"\x05" * 16, 1_790_000_000_000)
    signature = client.authenticate(req)
    key = _wallet_info(card.state.cert_der).public_key
    req.verify(card.state.wallet_id, signature, key)
    assert card.state == before  # no counter, balance or last-transaction change
    for other in (dataclasses.replace(req, challenge=b"\x06" * 16), dataclasses.replace(req, terminal_id="HQGT0002")):
        with pytest.raises(SignatureError):
            other.verify(card.state.wallet_id, signature, key)
    with pytest.raises(SignatureError):
        req.verify("0991000000000016", signature, key)
    with pytest.raises(EncodingError):
        VoucherBody.decode(req.body(card.state.wallet_id))  # an auth body is never a voucher body


def test_authenticate_refuses_a_blocked_card_and_a_malformed_request() -> None:
    from wallet.protocol import INS_AUTHENTICATE, STATUS_BLOCKED, AuthRequest

    card = _card()
    client = _client(card)
    with pytest.raises(CardStatusError) as exc:
        client.exchange(CommandApdu(0x80, INS_AUTHENTICATE, data=b"\xbf\x25\x01\x00", le=256))
    assert exc.value.status == sw.SW_WRONG_DATA
    card.state = dataclasses.replace(card.state, status=STATUS_BLOCKED)
    with pytest.raises(CardStatusError) as exc:
        client.authenticate(AuthRequest("HQGT0001", b"\x05" * 16, 1_790_000_000_000))
    assert exc.value.status == sw.SW_AUTH_METHOD_BLOCKED
