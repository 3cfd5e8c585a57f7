"""Gate decisions: tickets paid on a tap, passes for several tickets, anti-passback, daily capacity, persistence."""

from __future__ import annotations

import threading
import time

import pytest

from ecny_nfc.mock import MockReader
from pos.config import GateSettings
from pos.gate.ticket_gate import ANTI_PASSBACK, CAPACITY, PAID, PREPAID, Gate
from pos.home import Home
from wallet.card import WalletApplet
from wallet.errors import InvalidInput
from wallet.issuance import issue_card

GATE = "HQGT0001"  # Tiger Hill: adult ¥70.00


class Clock:
    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


def gate_for(home: Home, clock: Clock, capacity: int = 100, window_s: int = 600) -> Gate:
    return Gate(home, GATE, clock=clock, settings=GateSettings(daily_capacity=capacity, passback_window_s=window_s))


def card(home: Home, n: int, balance_fen: int = 100_000) -> WalletApplet:
    return WalletApplet(issue_card(home.pki, f"c{n:04d}", 4, balance_fen, home.config.risk.caps))


def tap(gate: Gate, c: WalletApplet, sku: str = "adult", quantity: int = 1):
    reader = MockReader()
    reader.present(c)
    decision = gate.admit(reader, sku, quantity, timeout=1)
    assert decision is not None
    return decision


def crash_after_the_payment(gate: Gate, c: WalletApplet, quantity: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sale whose payment commits and whose pass is never written: the gate stops in between."""
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(gate.store, "buy", crash)
    with pytest.raises(RuntimeError):
        tap(gate, c, quantity=quantity)
    monkeypatch.undo()


def paid(gate: Gate) -> list[int]:
    return [e.amount_fen for e in gate.ledger.entries(kind="payment")]


def test_a_tap_pays_one_ticket_and_opens(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    c = card(home, 1)
    d = tap(gate, c)
    assert d.open and d.code == PAID and d.amount_fen == 7000
    assert (d.entries_today, d.remaining) == (1, 99)
    assert paid(gate) == [7000] and c.state.balance_fen == 100_000 - 7000
    assert d.to_json("en")["gate"]["open"] is True
    # one read of the wallet serves the rules and the payment: no second SELECT / READ INFO
    assert [t.meaning.split(":")[0] for t in d.trace] == ["SELECT", "READ INFO", "GET RESPONSE", "GET RESPONSE",
                                                          "PAY"]


def test_anti_passback_refuses_within_the_window_then_sells_again(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock, window_s=600)
    c = card(home, 1)
    assert tap(gate, c).open
    clock.ms += 599_000
    again = tap(gate, c)
    assert not again.open and again.code == ANTI_PASSBACK
    assert "already entered" in again.message("en") and "已入园" in again.message("zh-CN")
    assert paid(gate) == [7000]  # refused before any charge
    clock.ms += 2_000
    later = tap(gate, c)
    assert later.open and later.code == PAID and paid(gate) == [7000, 7000]


def test_a_wallet_that_bought_three_tickets_enters_three_times(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    c = card(home, 1)
    first = tap(gate, c, "child", quantity=3)
    assert first.open and first.amount_fen == 3 * 3500 and first.tickets == 3
    second, third = tap(gate, c), tap(gate, c)
    assert (second.code, second.used, third.code, third.used) == (PREPAID, 2, PREPAID, 3)
    assert third.entries_today == 3 and third.remaining == 97
    fourth = tap(gate, c)
    assert not fourth.open and fourth.code == ANTI_PASSBACK and "3 of 3" in fourth.message("en")
    assert paid(gate) == [10500]


def test_daily_capacity_refuses_when_full_and_resets_the_next_day(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock, capacity=2)
    assert tap(gate, card(home, 1)).open
    assert tap(gate, card(home, 2)).open
    full = tap(gate, card(home, 3))
    assert not full.open and full.code == CAPACITY and full.remaining == 0
    assert "capacity" in full.message("en")
    assert len(paid(gate)) == 2
    clock.ms += 86_400_000
    assert gate.stats() == (0, 2)
    assert tap(gate, card(home, 4)).open


def test_a_declined_payment_stops_the_gate_with_its_reason(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    d = tap(gate, card(home, 1, balance_fen=1000))
    assert not d.open and d.code == "insufficient_balance"
    assert d.next_step("en") == "ask for another wallet"
    assert gate.stats() == (0, 100)


def test_counts_and_passes_survive_a_restart(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    c = card(home, 1)
    assert tap(gate, c, quantity=2).open
    gate.close()
    again = gate_for(home, clock)
    assert again.stats() == (1, 98)
    assert tap(again, c).code == PREPAID
    assert again.stats() == (2, 98)
    again.close()


def test_no_card_means_no_decision(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    assert gate.admit(MockReader(), "adult", timeout=0.05) is None


def test_gate_refuses_a_counter_terminal_and_unknown_products(home: Home, clock: Clock) -> None:
    from pos.gate.ticket_gate import GateError
    from wallet.errors import InvalidInput

    with pytest.raises(InvalidInput):
        Gate(home, "CMGQ0001")
    gate = gate_for(home, clock)
    with pytest.raises(GateError):
        gate.product("vip")


def test_the_ticket_and_quantity_charged_are_those_selected_when_the_wallet_arrives(home: Home, clock: Clock) -> None:
    """The visitor changes the quantity while the gate is already waiting: the tap pays what the screen shows."""

    class WatchedReader(MockReader):
        """Says when the gate starts waiting for a wallet."""

        def __init__(self) -> None:
            super().__init__()
            self.waiting = threading.Event()

        def connect(self, timeout=None, cancel=None):  # type: ignore[no-untyped-def]
            self.waiting.set()
            return super().connect(timeout=timeout, cancel=cancel)

    gate = gate_for(home, clock)
    c = card(home, 1)
    reader = WatchedReader()
    chosen = {"sku": "adult", "quantity": 1}
    asked: list[tuple[str, int]] = []

    def selection() -> tuple[str, int]:
        asked.append((chosen["sku"], chosen["quantity"]))
        return asked[-1]

    result: list = []
    waiting = threading.Thread(target=lambda: result.append(gate.admit(reader, "adult", 1, timeout=30,
                                                                       selection=selection)))
    waiting.start()
    assert reader.waiting.wait(10)  # the gate is waiting for a wallet with 1 × adult ...
    assert asked == [] and result == [] and waiting.is_alive()  # ... and has not read the selection yet
    chosen.update(sku="child", quantity=2)
    reader.present(c)
    waiting.join(30)
    assert not waiting.is_alive()
    [d] = result
    assert asked == [("child", 2)]  # read once, when the wallet arrived
    child = gate.product("child").price
    assert d.open and d.sku == "child" and d.tickets == 2 and d.amount_fen == 2 * child
    assert paid(gate) == [2 * child] and c.state.balance_fen == 100_000 - 2 * child


def test_a_bad_selection_at_the_tap_is_refused_and_releases_the_card(home: Home, clock: Clock) -> None:
    gate = gate_for(home, clock)
    c = card(home, 1)
    reader = MockReader()
    reader.present(c)
    with pytest.raises(InvalidInput):
        gate.admit(reader, "adult", 1, timeout=1, selection=lambda: ("adult", 0))
    assert paid(gate) == [] and c.state.balance_fen == 100_000
    reader.present(c)
    assert gate.admit(reader, "adult", 1, timeout=1).open  # the reader is free for the next tap


def keyless_clone(original: WalletApplet) -> WalletApplet:
    """A copy of everything a wallet shows (id, certificate, balance) with a key of the copier's own: what can be
    read off a card without breaking its secure element."""
    from cryptography.hazmat.primitives import serialization

    from wallet.card import CardState
    from wallet.keys import new_key

    pem = new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    return WalletApplet(CardState(**{**original.state.__dict__, "card_id": "clone", "key_pem": pem}))


def test_a_re_entry_on_a_pass_needs_the_wallets_key(home: Home, clock: Clock) -> None:
    """A clone without the key shows the same certified id; AUTHENTICATE tells them apart, and nothing is counted."""
    from pos.payment.reasons import Reason

    gate = gate_for(home, clock)
    c = card(home, 1)
    assert tap(gate, c, quantity=3).code == PAID
    clone = keyless_clone(c)
    refused = tap(gate, clone)
    assert not refused.open and refused.code == Reason.BAD_SIGNATURE.value
    assert refused.trace[-1].meaning.startswith("AUTHENTICATE")
    assert gate.stats()[0] == 1  # only the paying entry
    second = tap(gate, c)
    assert second.open and second.code == PREPAID and second.used == 2
    assert gate.stats()[0] == 2 and paid(gate) == [21000]


def test_a_card_pulled_during_the_proof_is_not_counted(home: Home, clock: Clock) -> None:
    from ecny_nfc.mock import Faults
    from pos.payment.reasons import Reason
    from wallet.protocol import INS_AUTHENTICATE

    gate = gate_for(home, clock)
    c = card(home, 1)
    assert tap(gate, c, quantity=2).open
    reader = MockReader()
    reader.present(c, Faults(tear_at=INS_AUTHENTICATE))
    d = gate.admit(reader, "adult", 1, timeout=1)
    assert d is not None and not d.open and d.code == Reason.CARD_REMOVED.value
    assert gate.stats()[0] == 1
    assert tap(gate, c).code == PREPAID and gate.stats()[0] == 2


def test_a_sale_the_gate_could_not_record_gets_its_pass_at_restart(home: Home, clock: Clock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate stopped between the payment's commit and the pass (a crash): at restart the pass is restored from
    the ledger with no entry used (the gate never opened), its tickets counted as sold once; the visitor enters on
    it without paying again."""
    gate = gate_for(home, clock)
    c = card(home, 1)
    crash_after_the_payment(gate, c, 2, monkeypatch)
    gate.close()
    assert c.state.balance_fen == 100_000 - 2 * 7000
    again = gate_for(home, clock)
    assert again.stats() == (0, 98)  # sold 2, nobody in yet
    first = tap(again, c)
    assert first.open and first.code == PREPAID and first.used == 1 and first.tickets == 2
    assert tap(again, c).used == 2
    assert paid(again) == [14000] and again.stats() == (2, 98)
    again.close()
    third = gate_for(home, clock)
    assert third.reconcile() == [] and third.stats() == (2, 98)  # restored once


def test_a_visitor_back_after_a_torn_sale_enters_on_it_without_paying_again(home: Home, clock: Clock) -> None:
    """The card paid and left before the gate heard it: when the wallet is back, the gate reads that payment back
    first (RECOVER), turns it into a pass and lets the visitor in on it, proving the key; nothing is
    charged twice."""
    from ecny_nfc.mock import Faults
    from pos.payment.reasons import Reason
    from wallet.protocol import INS_PAY

    gate = gate_for(home, clock, window_s=0)
    gate.ctx.recovery_timeout = 0
    c = card(home, 1)
    reader = MockReader()
    reader.present(c, Faults(tear_at=INS_PAY))
    torn = gate.admit(reader, "adult", 3, timeout=1)
    assert torn is not None and not torn.open and torn.code == Reason.CARD_REMOVED.value
    assert c.state.balance_fen == 100_000 - 3 * 7000  # the card paid; the gate does not know it yet
    back = tap(gate, c)
    assert back.open and back.code == PREPAID and (back.used, back.tickets) == (1, 3)
    names = [t.meaning.split(":")[0] for t in back.trace]
    assert "RECOVER" in names and names[-1] == "AUTHENTICATE" and "PAY" not in names
    assert [tap(gate, c).used for _ in range(2)] == [2, 3]
    assert paid(gate) == [21000] and gate.stats() == (3, 97)
    assert tap(gate, c).code == PAID  # the three tickets are used: a new sale


def test_a_torn_sale_read_back_the_next_day_does_not_hide_todays_pass(home: Home, clock: Clock) -> None:
    """Yesterday's ticket (torn, read back today) becomes yesterday's pass; today's tickets are bought and used on
    today's pass, whatever order the passes were recorded in."""
    from ecny_nfc.mock import Faults
    from wallet.protocol import INS_PAY

    gate = gate_for(home, clock, window_s=0)
    gate.ctx.recovery_timeout = 0
    c = card(home, 1)
    reader = MockReader()
    reader.present(c, Faults(tear_at=INS_PAY))
    assert not gate.admit(reader, "adult", 1, timeout=1).open
    clock.ms += 86_400_000
    bought = tap(gate, c, quantity=3)
    assert bought.code == PAID and bought.tickets == 3
    assert [tap(gate, c).code for _ in range(2)] == [PREPAID, PREPAID]
    assert sorted(paid(gate)) == [7000, 21000]


def test_a_wallet_back_after_a_tear_is_read_again(home: Home, clock: Clock) -> None:
    """The gate's own read serves only the first connection: the wallet that left mid-PAY and came back is read
    afresh (its counter moved), and its voucher is recovered, once."""
    from ecny_nfc.mock import Faults
    from wallet.protocol import INS_PAY

    gate = gate_for(home, clock)
    gate.ctx.recovery_timeout = 2
    c = card(home, 1)
    reader = MockReader()
    reader.present(c, Faults(tear_at=INS_PAY))
    reader.present(c)
    d = gate.admit(reader, "adult", 1, timeout=1)
    assert d is not None and d.open and d.code == PAID
    names = [t.meaning.split(":")[0] for t in d.trace]
    assert names.count("SELECT") == 2 and names.count("READ INFO") == 2
    assert names[-1] == "RECOVER" and d.outcome is not None and d.outcome.torn
    assert paid(gate) == [7000] and c.state.balance_fen == 100_000 - 7000


def test_a_garbled_answer_to_the_proof_stops_the_visitor_not_the_gate(home: Home, clock: Clock) -> None:
    from pos.payment.reasons import Reason
    from wallet.protocol import INS_AUTHENTICATE

    class Garbled:
        """The wallet, except that its AUTHENTICATE answer is one byte (no status word)."""

        def __init__(self, inner: WalletApplet) -> None:
            self.inner = inner

        def reset(self) -> None:
            self.inner.reset()

        def process(self, apdu: bytes) -> bytes:
            out = self.inner.process(apdu)
            return out[:1] if apdu[1] == INS_AUTHENTICATE else out

    gate = gate_for(home, clock)
    c = card(home, 1)
    assert tap(gate, c, quantity=2).open
    d = tap(gate, Garbled(c))  # type: ignore[arg-type]
    assert not d.open and d.code == Reason.CARD_ERROR.value
    assert gate.stats()[0] == 1
    assert tap(gate, c).code == PREPAID


def test_a_sale_refunded_before_the_gate_recorded_it_gets_no_pass(home: Home, clock: Clock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gate = gate_for(home, clock)
    c = card(home, 1)
    crash_after_the_payment(gate, c, 2, monkeypatch)
    [payment] = gate.ledger.entries(kind="payment")
    gate.ledger.append("refund", voucher_id=payment.voucher_id, wallet_id=payment.wallet_id, counter=payment.counter,
                       amount_fen=payment.amount_fen, data={"refund_id": f"{GATE}-{payment.voucher_id}-R1"})
    gate.close()
    again = gate_for(home, clock)
    assert again.stats() == (0, 100)
    assert tap(again, c).code == PAID
