"""ISO 7816-4 conformance of the wallet applet (as probed over PC/SC), every status word it answers, and the
docs/protocol.md tables against the applet's own tables, both ways."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from ecny_nfc.mock import MockReader
from pos.payment.card_client import KnownIssuers
from pos.payment.session import PaymentSession
from tests.conftest import Taps
from wallet import apdu as sw
from wallet.apdu import CommandApdu
from wallet.card import CardState, WalletApplet
from wallet.issuance import issue_card
from wallet.pki import OperatorPki, cert_der
from wallet.protocol import AID, COMMANDS, STATUS_BLOCKED, LoadToken, PayRequest
from wallet.voucher import CNY

PKI = OperatorPki.create()
ROOT = Path(__file__).resolve().parent.parent
SELECT = CommandApdu(0x00, 0xA4, 0x04, 0x00, AID, le=256).to_bytes()


def _card(**changes: object) -> WalletApplet:
    state = issue_card(PKI, "c0001", 4, 10_000)
    state = state.evolve(offline_single_max=5_000, offline_cumulative_max=8_000, offline_count_max=10, **changes)
    return WalletApplet(state)


def _selected(**changes: object) -> WalletApplet:
    card = _card(**changes)
    assert card.process(SELECT)[-2:] == b"\x90\x00"
    return card


def _sw(card: WalletApplet, apdu: bytes | str) -> int:
    raw = card.process(bytes.fromhex(apdu) if isinstance(apdu, str) else apdu)
    return int.from_bytes(raw[-2:], "big")


def _pay(amount: int, timestamp_ms: int | None = None) -> bytes:
    req = PayRequest(amount, CNY, "320508000000101", "CMGQ0001", secrets.token_bytes(16),
                     timestamp_ms or time.time_ns() // 10**6)
    return CommandApdu(0x80, 0x50, data=req.encode(), le=256).to_bytes()


def _load(card: WalletApplet, amount: int, counter: int, wallet_id: str | None = None) -> bytes:
    token = LoadToken(wallet_id or card.state.wallet_id, counter, amount, time.time_ns() // 10**6)
    return CommandApdu(0x80, 0x54, data=token.signed(PKI.wallet_ca.key).encode(), le=256).to_bytes()


def test_a_failed_select_of_another_application_keeps_the_wallet_selected() -> None:
    card = _selected()
    assert _sw(card, CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A0000000031010"), le=256).to_bytes()) \
        == sw.SW_FILE_NOT_FOUND
    assert _sw(card, "80CA010000") & 0xFF00 == sw.SW_BYTES_REMAINING  # still selected: READ INFO answers


def test_commands_without_le_answer_no_data() -> None:
    card = _card()
    assert card.process(CommandApdu(0x00, 0xA4, 0x04, 0x00, AID).to_bytes()) == b"\x90\x00"  # case 3: no FCI
    assert _sw(card, "80CA0100") == sw.SW_WRONG_LENGTH  # case 1 READ INFO: its answer is its point
    before = card.state
    assert _sw(card, _pay(100)[:-1]) == sw.SW_WRONG_LENGTH  # case 3 PAY: refused before it pays
    assert card.state is before
    assert card.process(_load(card, 100, 1)[:-1]) == b"\x90\x00"  # case 3 LOAD: loads, answers no data
    assert card.state.balance_fen == 10_100
    assert card.process(bytes.fromhex("80CA010000"))[-2:] == b"\x61\x00"
    assert _sw(card, "00C00000") == sw.SW_WRONG_LENGTH  # GET RESPONSE without Le; the answer stays pending
    assert _sw(card, "00C0000000") & 0xFF00 == sw.SW_BYTES_REMAINING


def test_length_errors_answer_6700() -> None:
    card = _selected()
    for apdu in ("8050000000", "80500000", "8054000000", "8088000000", "8056080000", "805200000100", "80CA01000100",
                 "00A4040000"):
        assert _sw(card, apdu) == sw.SW_WRONG_LENGTH, apdu
    assert _sw(card, "80500000" + "03DF0100" + "00") == sw.SW_WRONG_DATA  # data of the right kind, but wrong


def test_classes_with_channels_secure_messaging_or_chaining_are_named() -> None:
    card = _selected()
    for cla, status in ((0x01, sw.SW_CHANNEL_NOT_SUPPORTED), (0x03, sw.SW_CHANNEL_NOT_SUPPORTED),
                        (0x41, sw.SW_CHANNEL_NOT_SUPPORTED), (0x81, sw.SW_CHANNEL_NOT_SUPPORTED),
                        (0x84, sw.SW_SM_NOT_SUPPORTED), (0x0C, sw.SW_SM_NOT_SUPPORTED),
                        (0x10, sw.SW_CHAINING_NOT_SUPPORTED), (0x90, sw.SW_CHAINING_NOT_SUPPORTED),
                        (0xA0, sw.SW_CLA_NOT_SUPPORTED), (0xFF, sw.SW_CLA_NOT_SUPPORTED),
                        (0xC0, sw.SW_CLA_NOT_SUPPORTED), (0x20, sw.SW_CLA_NOT_SUPPORTED)):
        assert _sw(card, bytes([cla]) + bytes.fromhex("CA000000")) == status, hex(cla)


def test_every_status_word_in_the_table_is_answered() -> None:
    seen: dict[int, str] = {}

    def expect(status: int, card: WalletApplet, apdu: bytes | str, what: str) -> None:
        got = _sw(card, apdu)
        got = sw.SW_BYTES_REMAINING if got & 0xFF00 == sw.SW_BYTES_REMAINING else got
        assert got == status, f"{what}: {got:04X}"
        seen[status] = what

    expect(sw.SW_CONDITIONS_NOT_SATISFIED, _card(), "80CA010000", "not selected")
    card = _selected()
    expect(sw.SW_OK, card, SELECT, "SELECT")
    expect(sw.SW_BYTES_REMAINING, card, "80CA010000", "READ INFO chained")
    expect(sw.SW_WRONG_LENGTH, card, "8050000000", "PAY without data")
    expect(sw.SW_CHANNEL_NOT_SUPPORTED, card, "01CA000000", "channel 1")
    expect(sw.SW_SM_NOT_SUPPORTED, card, "84CA000000", "secure messaging")
    expect(sw.SW_CHAINING_NOT_SUPPORTED, card, "10CA000000", "chaining")
    expect(sw.SW_CLA_NOT_SUPPORTED, card, "A0CA000000", "class A0")
    expect(sw.SW_INS_NOT_SUPPORTED, card, "80EE000000", "INS EE")
    expect(sw.SW_WRONG_P1P2, card, "80CA020000", "READ INFO P1 02")
    expect(sw.SW_WRONG_DATA, card, "80500000" + "03DF0100" + "00", "PAY with a bad request")
    expect(sw.SW_FILE_NOT_FOUND, card, "00A4040003A0000000", "another AID")
    expect(sw.SW_REFERENCED_DATA_NOT_FOUND, card, "80520000" + "10" + "00" * 16 + "00", "no such last payment")
    expect(sw.SW_SECURITY_STATUS, card, _load(card, 100, 1, wallet_id="0" * 16), "token for another wallet")
    expect(sw.SW_TOKEN_REPLAYED, card, _load(card, 100, 0), "token replayed")
    expect(sw.SW_OVER_BALANCE_LIMIT, card, _load(card, 10**9, 1), "over the balance cap")
    expect(sw.SW_INSUFFICIENT_BALANCE, card, _pay(20_000), "over the balance")
    expect(sw.SW_OVER_OFFLINE_LIMIT, card, _pay(6_000), "over the offline single cap")
    expect(sw.SW_OVER_SINGLE_LIMIT, _selected(single_max=100), _pay(200), "over the single limit")
    expect(sw.SW_OVER_DAILY_LIMIT, _selected(daily_max=100), _pay(200), "over the daily limit")
    expect(sw.SW_AUTH_METHOD_BLOCKED, _selected(status=STATUS_BLOCKED), _pay(100), "blocked")

    def full(_: CardState) -> None:
        raise OSError(28, "No space left on device")

    unpersisted = WalletApplet(_card().state, persist=full)
    unpersisted.process(SELECT)
    expect(sw.SW_MEMORY_FAILURE, unpersisted, _pay(100), "state not persisted")
    assert unpersisted.state.counter == 0
    assert set(seen) == set(sw.APPLET_STATUS_WORDS)


def test_the_applet_answers_only_status_words_of_its_table() -> None:
    """Every SW_ name the applet's source uses is in the table (the docs' list), so none is left undocumented."""
    source = (ROOT / "wallet" / "card.py").read_text() + (ROOT / "wallet" / "apdu.py").read_text().split(
        "def class_status")[1].split("def sw_name")[0]
    used = {getattr(sw, name) for name in re.findall(r"\bSW_[A-Z0-9_]+\b", source)}
    assert used <= set(sw.APPLET_STATUS_WORDS)


def _table(section: str) -> list[list[str]]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]  # past the header and its rule
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_docs_status_word_table_is_the_applets_both_ways() -> None:
    def code(sw_: int) -> str:
        return "`61xx`" if sw_ == sw.SW_BYTES_REMAINING else f"`{sw_:04X}`"

    assert _table("Status words") == [[code(k), v] for k, v in sw.APPLET_STATUS_WORDS.items()]


def test_the_docs_command_table_is_the_applets_both_ways() -> None:
    assert _table("APDU set") == [[name, f"`{apdu}`", answer] for name, apdu, answer in COMMANDS]


def test_a_card_from_an_issuer_the_terminal_does_not_hold_costs_what_the_docs_say(taps: Taps) -> None:
    """docs/protocol.md: 5 APDUs a payment; 10 (9 before PAY) for a card whose issuer the terminal does not hold;
    7 for a terminal that holds no issuer at all."""
    text = " ".join((ROOT / "docs" / "protocol.md").read_text().split())
    assert "A payment is 5 APDUs" in text and "costs 10 APDUs (9 before PAY)" in text and "7 APDUs" in text
    other = OperatorPki.create()
    for issuers, expected in ((taps.ctx.issuers, 5), (KnownIssuers([cert_der(other.wallet_ca.cert)]), 10),
                              (KnownIssuers(), 7)):
        taps.ctx.issuers = issuers
        reader = MockReader()
        reader.present(taps.card())
        out = PaymentSession(taps.ctx, reader).pay(100, timeout=1)
        assert out.approved and len(out.trace) == expected
