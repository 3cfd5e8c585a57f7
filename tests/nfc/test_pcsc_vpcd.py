"""Payments through PC/SC (pyscard -> pcscd -> vpcd driver) to the wallet card as a vpcd virtual card."""

from __future__ import annotations

import threading

import pytest
from payment_scenarios import (
    cancel_before_pay,
    decline,
    full_payment,
    long_chained_response,
    torn_and_recovered_in_session,
    torn_then_recovered_next_tap,
)

from ecny_nfc.factory import open_reader
from ecny_nfc.reader import Cancelled, MultipleCards, NoCard, ReaderBusy, ReaderNotFound
from pos.payment.reasons import Reason


def test_full_payment(pcsc_stack, terminal) -> None:
    assert full_payment(pcsc_stack, terminal) >= 3


def test_cancel_before_pay_sends_nothing_more(pcsc_stack, terminal) -> None:
    cancel_before_pay(pcsc_stack, terminal)


def test_decline_changes_nothing(pcsc_stack, terminal) -> None:
    decline(pcsc_stack, terminal)


def test_torn_pay_recovered_in_the_same_session(pcsc_stack, terminal) -> None:
    torn_and_recovered_in_session(pcsc_stack, terminal)


def test_torn_pay_held_then_recovered_on_the_next_tap(pcsc_stack, terminal) -> None:
    torn_then_recovered_next_tap(pcsc_stack, terminal)


def test_long_chained_response(pcsc_stack, terminal) -> None:
    long_chained_response(pcsc_stack, terminal)


def test_open_reader_by_name_prefix(pcsc_stack, pcscd, terminal) -> None:
    card_id = terminal.issue()
    with pcsc_stack.present(terminal, card_id):
        reader = open_reader(f"pcsc:{pcscd.slots[0]}")
        try:
            assert reader.readers == [pcscd.slots[0]]
            assert terminal.pay(reader, 420).approved
        finally:
            reader.close()
    assert terminal.balance(card_id) == 100_000 - 420


def test_cards_in_two_readers_are_refused(pcsc_stack, pcscd, terminal) -> None:
    first, second = terminal.issue(), terminal.issue()
    with pcsc_stack.present(terminal, first), pcsc_stack.present(terminal, second, slot=1):
        reader = pcsc_stack.reader("Virtual PCD")  # both slots
        try:
            with pytest.raises(MultipleCards, match="one card at a time"):
                reader.connect(timeout=5)
            out = terminal.pay(reader, 100)
        finally:
            reader.close()
    assert out.reason is Reason.MULTIPLE_CARDS
    assert terminal.balance(first) == terminal.balance(second) == 100_000
    assert terminal.payments() == []


def test_card_held_by_another_application_is_busy(pcsc_stack, pcscd, terminal) -> None:
    from smartcard import scard

    card_id = terminal.issue()
    with pcsc_stack.present(terminal, card_id):
        reader = pcsc_stack.reader()
        try:
            conn = reader.connect(timeout=5)  # wait until pcscd sees the card
            conn.release()
            hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            hr, hcard, _ = scard.SCardConnect(ctx, pcscd.slots[0], scard.SCARD_SHARE_EXCLUSIVE,
                                              scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)
            try:
                with pytest.raises(ReaderBusy, match="held by another application"):
                    reader.connect(timeout=5)
            finally:
                scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)
                scard.SCardReleaseContext(ctx)
            assert terminal.pay(reader, 100).approved  # free again
        finally:
            reader.close()


def test_reader_busy_while_another_terminal_holds_it(pcsc_stack) -> None:
    first = pcsc_stack.reader()
    try:
        with pytest.raises(ReaderBusy, match="another terminal"):
            pcsc_stack.reader()
    finally:
        first.close()
    pcsc_stack.reader().close()


def test_reader_not_found_lists_the_readers(pcscd) -> None:
    with pytest.raises(ReaderNotFound, match="Virtual PCD 00 00"):
        open_reader("pcsc:No Such Reader")


def test_waiting_for_a_card_times_out_and_cancels(pcsc_stack) -> None:
    reader = pcsc_stack.reader()
    try:
        with pytest.raises(NoCard):
            reader.connect(timeout=0.2)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(Cancelled):
            reader.connect(timeout=30, cancel=cancel)
    finally:
        reader.close()
