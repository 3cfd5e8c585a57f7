"""Payments through nfcpy's real reader stack (ContactlessFrontend, udp driver, Type4ATag) to the ISO-DEP card."""

from __future__ import annotations

import errno
import threading

import pytest
from payment_scenarios import (
    assert_conserved,
    cancel_before_pay,
    decline,
    full_payment,
    long_chained_response,
    torn_and_recovered_in_session,
    torn_then_recovered_next_tap,
)

from ecny_nfc.emulation import EmulatorFaults, fixed_card
from ecny_nfc.factory import open_reader
from ecny_nfc.iso_dep_card import FWT, UdpCardEmulator
from ecny_nfc.nfcpy_reader import NfcpyReader
from ecny_nfc.reader import Cancelled, NoCard, ReaderBusy, ReaderNotFound
from pos.payment.reasons import Reason
from wallet.protocol import INS_PAY


def test_full_payment(udp_stack, terminal) -> None:
    assert full_payment(udp_stack, terminal) >= 3


def test_cancel_before_pay_sends_nothing_more(udp_stack, terminal) -> None:
    cancel_before_pay(udp_stack, terminal)


def test_decline_changes_nothing(udp_stack, terminal) -> None:
    decline(udp_stack, terminal)


def test_torn_pay_recovered_in_the_same_session(udp_stack, terminal) -> None:
    torn_and_recovered_in_session(udp_stack, terminal)


def test_torn_pay_held_then_recovered_on_the_next_tap(udp_stack, terminal) -> None:
    torn_then_recovered_next_tap(udp_stack, terminal)


def test_long_chained_response(udp_stack, terminal) -> None:
    long_chained_response(udp_stack, terminal)


def test_slow_card_keeps_the_reader_waiting_with_wtx(udp_stack, terminal) -> None:
    slow = FWT * 1.5  # longer than the frame waiting time: without S(WTX) nfcpy would give up
    card_id = terminal.issue()
    with udp_stack.present(terminal, card_id, EmulatorFaults(slow=slow)):
        reader = udp_stack.reader()
        try:
            out = terminal.pay(reader, 250)
        finally:
            reader.close()
    assert out.approved, out
    assert terminal.balance(card_id) == 100_000 - 250
    assert min(t.ms for t in out.trace) >= slow * 1000  # every APDU really was slow, and still answered


def test_reader_unplugged_mid_pay_never_half_records(udp_stack, terminal) -> None:
    """The reader dies after PAY went out: no payment is recorded, the intent is held and recovered once."""
    card_id = terminal.issue(balance_fen=10_000)
    with udp_stack.present(terminal, card_id):
        reader = udp_stack.reader()
        device = reader.clf.device
        send = device.send_cmd_recv_rsp

        def dying(target, data, timeout):
            if data is not None and len(data) > 2 and data[2] == INS_PAY:
                send(target, data, 0)  # PAY reaches the card, the answer never comes back
                raise OSError(errno.ENODEV, "No such device")
            return send(target, data, timeout)

        device.send_cmd_recv_rsp = dying
        try:
            out = terminal.pay(reader, 600)
        finally:
            reader.close()
        assert out.status == "declined" and out.reason is Reason.TERMINAL_ERROR and out.pending_recovery, out
        assert "plug it back in" in out.detail
        state = terminal.home.cards.load(card_id)
        assert state.balance_fen == 10_000 - 600  # the card paid ...
        assert terminal.payments() == []  # ... the terminal has not recorded it yet, and holds the intent
        assert len(terminal.ledger.open_intents(state.wallet_id)) == 1
        reader = udp_stack.reader()
        try:
            out = terminal.pay(reader, 100)
        finally:
            reader.close()
    assert out.approved and out.recovered == [f"{state.wallet_id}-00000001"], out
    assert_conserved(terminal, card_id, 10_000)


def test_waiting_for_a_card_times_out_and_cancels(udp_stack, terminal) -> None:
    with UdpCardEmulator(fixed_card(None), "127.0.0.1", 0) as nobody:  # a port nobody answers on
        path = nobody.path
    reader = NfcpyReader(path)
    try:
        with pytest.raises(NoCard):
            reader.connect(timeout=0.1)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(Cancelled):
            reader.connect(timeout=30, cancel=cancel)
        out = terminal.pay(reader, 100, timeout=0.1)
        assert out.reason is Reason.NO_CARD
    finally:
        reader.close()


def test_reader_not_found_says_how_to_fix() -> None:
    with pytest.raises(ReaderNotFound, match="does not resolve"):
        open_reader("udp:no-such-host.invalid:54321")
    with pytest.raises(ReaderNotFound, match="serial port"):
        open_reader("tty:S99:pn532")
    with pytest.raises(ReaderNotFound, match=r"lsusb|libusb"):
        open_reader("usb:ffff:ffff")
    with pytest.raises(ReaderNotFound, match="unknown reader"):
        open_reader("bluetooth:1")


def test_reader_busy_while_another_terminal_holds_it(udp_stack, terminal) -> None:
    card_id = terminal.issue()
    with udp_stack.present(terminal, card_id):
        first = udp_stack.reader()
        try:
            with pytest.raises(ReaderBusy, match="in use"):
                udp_stack.reader()
        finally:
            first.close()
        again = udp_stack.reader()  # free once the first terminal closed it
        try:
            assert terminal.pay(again, 100).approved
        finally:
            again.close()
