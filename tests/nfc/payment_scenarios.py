"""Payment scenarios run over each real reader stack, with the assertions of the mock reader tests.

Money is conserved between the card store and the terminal's ledger, each voucher is recorded once, a decline
changes nothing, and a torn tap is either certainly uncharged or recovered exactly once.
"""

from __future__ import annotations

from cryptography import x509

from ecny_nfc.emulation import EmulatorFaults
from pos.payment.card_client import WalletClient
from pos.payment.reasons import Reason
from wallet import apdu as sw
from wallet.protocol import INS_GET_RESPONSE, INS_PAY
from wallet.voucher import Voucher


def assert_conserved(terminal, card_id: str, start_fen: int) -> None:
    """Card debit equals the ledger's payments from this wallet; one entry per voucher; the chain verifies."""
    state = terminal.home.cards.load(card_id)
    mine = [e for e in terminal.payments() if e.wallet_id == state.wallet_id]
    assert start_fen - state.balance_fen == sum(e.amount_fen for e in mine)
    assert len({e.voucher_id for e in mine}) == len(mine)
    assert state.counter == len(mine)
    assert terminal.ledger.open_intents(state.wallet_id) == []
    terminal.ledger.verify()


def _pay_once(stack, terminal, amount_fen: int):
    """Open the stack's reader, take one payment through it, close it."""
    reader = stack.reader()
    try:
        return terminal.pay(reader, amount_fen)
    finally:
        reader.close()


def full_payment(stack, terminal) -> int:
    """A clean payment; returns how many APDUs the card saw (PAY is the last of them)."""
    card_id = terminal.issue(balance_fen=100_000)
    with stack.present(terminal, card_id) as emulator:
        out = _pay_once(stack, terminal, 1230)
        assert emulator.card.wait_taps(1, 5)
    assert out.approved, out
    state = terminal.home.cards.load(card_id)
    assert state.balance_fen == 100_000 - 1230 == out.balance_after_fen
    [entry] = terminal.payments()
    assert entry.voucher_id == out.voucher_id == f"{state.wallet_id}-00000001"
    voucher = Voucher.decode(bytes.fromhex(entry.data["voucher"]))
    assert voucher.body.amount_fen == 1230
    voucher.verify(x509.load_der_x509_certificate(state.cert_der).public_key())
    assert [t.meaning.split(":")[0] for t in out.trace][-1] == "PAY"
    assert_conserved(terminal, card_id, 100_000)
    [tap] = emulator.card.taps
    assert not tap.torn and tap.apdus == len(out.trace)
    return tap.apdus


def decline(stack, terminal) -> None:
    """The card cannot cover the amount: declined with the reason, nothing changes anywhere."""
    card_id = terminal.issue(balance_fen=500)
    before = terminal.home.cards.load(card_id)
    with stack.present(terminal, card_id):
        out = _pay_once(stack, terminal, 501)
    assert out.status == "declined" and out.reason is Reason.INSUFFICIENT_BALANCE, out
    after = terminal.home.cards.load(card_id)
    assert (after.balance_fen, after.counter) == (before.balance_fen, before.counter)
    assert terminal.payments() == []
    assert_conserved(terminal, card_id, 500)


def _pay_apdu_index(trace) -> int:
    return next(i for i, t in enumerate(trace, 1) if t.command[1] == INS_PAY)


def torn_and_recovered_in_session(stack, terminal) -> None:
    """The card vanishes right after it processed PAY and comes back: the same session recovers the voucher."""
    card_id = terminal.issue(balance_fen=100_000)
    with stack.present(terminal, card_id) as emulator:
        first = _pay_once(stack, terminal, 100)
    pay_at = _pay_apdu_index(first.trace)
    with stack.present(terminal, card_id, EmulatorFaults(tear_after=pay_at)) as emulator:
        out = _pay_once(stack, terminal, 777)
        assert emulator.card.wait_taps(2, 5)
    assert emulator.card.taps[0].torn and emulator.card.taps[0].apdus == pay_at
    assert out.approved, out
    state = terminal.home.cards.load(card_id)
    assert out.voucher_id == f"{state.wallet_id}-00000002"
    assert state.balance_fen == 100_000 - 100 - 777
    meanings = [t.meaning for t in out.trace]
    assert any("no answer (card left the field)" in m for m in meanings)
    assert meanings[-1].startswith("RECOVER: success")
    assert [e.kind for e in terminal.ledger.entries()][-3:] == ["intent", "torn", "payment"]
    assert_conserved(terminal, card_id, 100_000)


def torn_then_recovered_next_tap(stack, terminal) -> None:
    """The card vanishes after PAY and stays away past the terminal's patience: the payment is held (nothing
    recorded); when the customer taps again later, the next payment recovers it exactly once."""
    terminal.ctx.recovery_timeout = 0.3
    card_id = terminal.issue(balance_fen=50_000)
    with stack.present(terminal, card_id) as emulator:
        first = _pay_once(stack, terminal, 100)
    pay_at = _pay_apdu_index(first.trace)
    with stack.present(terminal, card_id, EmulatorFaults(tear_after=pay_at, away=1.0)) as emulator:
        reader = stack.reader()
        try:
            torn = terminal.pay(reader, 2000)
            assert torn.reason is Reason.CARD_REMOVED and torn.pending_recovery, torn
            state = terminal.home.cards.load(card_id)
            assert state.balance_fen == 50_000 - 100 - 2000  # the card was charged ...
            assert len(terminal.payments()) == 1  # ... but nothing is recorded yet
            assert len(terminal.ledger.open_intents(state.wallet_id)) == 1
            follow = terminal.pay(reader, 300, timeout=10)  # the card comes back after its `away` time
        finally:
            reader.close()
        assert emulator.card.taps[0].torn
    assert follow.approved, follow
    assert follow.recovered == [f"{state.wallet_id}-00000002"]
    assert terminal.home.cards.load(card_id).balance_fen == 50_000 - 100 - 2000 - 300
    assert_conserved(terminal, card_id, 50_000)


def long_chained_response(stack, terminal) -> None:
    """READ INFO (~1.2 KB) arrives whole through 61xx GET RESPONSE chaining; each 258-byte answer is longer
    than one ISO-DEP frame, and a 261-byte command goes the other way."""
    card_id = terminal.issue()
    state = terminal.home.cards.load(card_id)
    with stack.present(terminal, card_id):
        reader = stack.reader()
        try:
            conn = reader.connect(timeout=5)
            try:
                client = WalletClient(conn)
                client.select()
                info = client.read_info()
                long_command = bytes([0x00, 0xA4, 0x04, 0x00, 0xFF]) + bytes(range(255)) + b"\x00"
                answer = conn.transceive(long_command)
            finally:
                conn.release()
        finally:
            reader.close()
    assert info.cert_der == state.cert_der and info.issuer_der == state.issuer_der
    assert info.balance_fen == state.balance_fen and info.wallet_id == state.wallet_id
    assert len(info.encode()) > 1000
    chained = [t for t in client.trace if t.command[1] == INS_GET_RESPONSE]
    assert len(chained) >= 3
    assert any(t.response is not None and len(t.response) == 258 for t in client.trace)
    # The whole 261-byte command reached the card: it parsed it and looked for that AID (a cut one is 6700).
    assert int.from_bytes(answer[-2:], "big") == sw.SW_FILE_NOT_FOUND


class _CancelAfter:
    """A reader whose connections cancel the charge once the card answered the first command with ``ins``: the
    clerk's Esc arriving while the card works on it."""

    def __init__(self, reader, ins: int, control) -> None:
        self._reader = reader
        self._ins = ins
        self._control = control
        self.name = reader.name

    def connect(self, timeout=None, cancel=None):
        conn = self._reader.connect(timeout=timeout, cancel=cancel)
        outer = self

        class Conn:
            uid = conn.uid

            def transceive(self, apdu: bytes) -> bytes:
                answer = conn.transceive(apdu)
                if apdu[1] == outer._ins:
                    outer._control.request_cancel()
                return answer

            def is_present(self) -> bool:
                return conn.is_present()

            def release(self) -> None:
                conn.release()

        return Conn()

    def close(self) -> None:
        self._reader.close()


def cancel_before_pay(stack, terminal) -> None:
    """Esc while the card answers READ INFO: no further command reaches the card, nothing is charged, the intent
    is closed void."""
    from pos.payment.control import ChargeControl
    from pos.payment.session import PaymentSession
    from wallet.protocol import INS_READ_INFO

    card_id = terminal.issue(balance_fen=10_000)
    control = ChargeControl()
    with stack.present(terminal, card_id) as emulator:
        reader = _CancelAfter(stack.reader(), INS_READ_INFO, control)
        try:
            out = PaymentSession(terminal.ctx, reader).pay(400, timeout=5, cancel=control)
        finally:
            reader.close()
        assert emulator.card.wait_taps(1, 5)
    assert out.reason is Reason.CANCELLED, out
    assert [t.command[1] for t in out.trace][-1] == INS_READ_INFO
    assert emulator.card.taps[0].apdus == len(out.trace)  # the card saw nothing after READ INFO
    state = terminal.home.cards.load(card_id)
    assert (state.balance_fen, state.counter) == (10_000, 0)
    assert [e.kind for e in terminal.ledger.entries()][-2:] == ["intent", "void"]
    assert terminal.ledger.open_intents() == []
