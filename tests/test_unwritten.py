"""A payment the ledger could not write after the card paid (issue 16): kept in memory, written once the disk
allows (before the next charge, at a sync round), exactly once whoever comes first: the retry, or the card's next
tap reading its transaction log. The disk failure is injected at the payment's write (a real full tmpfs:
tests/test_full_disk.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecny_nfc.mock import MockReader
from pos.cards.manage import issue_cards, tap_mock_card
from pos.gate.ticket_gate import PREPAID, Gate
from pos.home import Home
from pos.ledger import Ledger
from pos.payment.checkout import Checkout
from pos.payment.reasons import Reason
from pos.payment.unwritten import KEPT
from pos.sync.loop import SyncLoop
from wallet.card import WalletApplet
from wallet.issuance import issue_card

TID = "CMGQ0001"


@pytest.fixture(autouse=True)
def kept() -> Iterator[None]:
    KEPT.clear()
    yield
    KEPT.clear()


class FullDisk:
    """The ledger refuses every ``payment`` entry while ``on`` (SQLite's "database or disk is full")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = True
        real = Ledger._append

        def append(led: Ledger, kind: str, **fields: object):  # type: ignore[no-untyped-def]
            if kind == "payment" and self.on:
                raise sqlite3.OperationalError("database or disk is full")
            return real(led, kind, **fields)

        monkeypatch.setattr(Ledger, "_append", append)


def payments_of(home: Home, voucher_id: str, tid: str = TID) -> int:
    with home.ledger(tid, readonly=True) as led:
        return sum(1 for e in led.entries(kind="payment") if e.voucher_id == voucher_id)


def kept_outcome(home: Home, card_id: str, amount_fen: int, monkeypatch: pytest.MonkeyPatch) -> tuple[str, FullDisk]:
    disk = FullDisk(monkeypatch)
    out = tap_mock_card(home, TID, card_id, amount_fen)
    assert not out.approved and out.reason is Reason.TERMINAL_ERROR and out.pending_recovery
    assert out.kept_voucher_id and out.kept_voucher_id.endswith("-00000001")
    assert out.message("en").startswith("the wallet was charged") and "kept" in out.message("en")
    assert "已扣款" in out.message("zh-CN")
    assert out.to_json()["kept_voucher_id"] == out.kept_voucher_id
    assert KEPT.count(home.ledger_path(TID)) == (1, amount_fen)
    return out.kept_voucher_id, disk


def test_full_disk_then_a_sync_round_writes_it_once_and_the_next_tap_adds_nothing(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from tests.support.shop import shop_session

    with shop_session(Home(tmp_path / "home")) as shop:
        home = shop.home
        shop.provision(TID)
        (card,) = shop.cards(1)
        vid, disk = kept_outcome(home, card, 700, monkeypatch)
        assert payments_of(home, vid) == 0 and home.cards.load(card).balance_fen == 100_000 - 700
        loop = SyncLoop(home, TID, shop.url, interval=60)
        assert loop.run_round() and loop.last_result.uploaded == 0  # the disk still refuses: it stays kept
        assert KEPT.count(home.ledger_path(TID)) == (1, 700)
        disk.on = False  # space freed
        outboxes: list[list[str | None]] = []

        def round_() -> object:
            with home.ledger(TID) as led:
                outboxes.append([e.voucher_id for e in led.outbox()])
            return shop.sync(TID)

        assert SyncLoop(home, TID, shop.url, sync=round_).run_round()
        assert outboxes == [[vid]]  # written before the upload: exactly one voucher in the outbox
        assert KEPT.count(home.ledger_path(TID)) == (0, 0) and [k.voucher_id for k in KEPT.written(
            home.ledger_path(TID))] == [vid]
        assert payments_of(home, vid) == 1
        again = shop.pay(TID, card, 100)  # the card taps again: nothing left to recover
        assert again.recovered == [] and payments_of(home, vid) == 1
        assert shop.sync(TID).settled == 1 and shop.sync(TID).uploaded == 0
        with home.ledger(TID) as led:
            assert led.open_intents() == [] and led.outbox() == []
            settled = [e.voucher_id for e in led.entries(kind="settlement")]
            assert sorted(settled) == sorted([vid, again.voucher_id])  # each settled once
            led.verify(full=True)
        with shop.admin() as admin:
            assert admin.wallet(home.cards.load(card).wallet_id).spent_fen == 800


def test_the_next_charge_writes_it_first(tmp_path: Path, monkeypatch) -> None:
    home = Home(tmp_path / "home")
    issue_cards(home, 4, 100_000, 2, register=False)
    vid, disk = kept_outcome(home, "c0001", 500, monkeypatch)
    disk.on = False
    other = tap_mock_card(home, TID, "c0002", 200)  # another customer: the kept payment is written before it
    assert other.approved and other.recovered == [] and payments_of(home, vid) == 1
    back = tap_mock_card(home, TID, "c0001", 300)
    assert back.approved and back.recovered == [] and payments_of(home, vid) == 1
    with home.ledger(TID, readonly=True) as led:
        assert sorted(e.amount_fen for e in led.entries(kind="payment")) == [200, 300, 500]
        assert led.open_intents() == []


def test_a_card_back_first_records_it_and_the_retry_adds_nothing(tmp_path: Path, monkeypatch) -> None:
    """Nothing retried yet (or the process restarted): the card's next tap reads the payment from its transaction
    log; the kept copy, written afterwards, finds it on file and adds nothing."""
    home = Home(tmp_path / "home")
    issue_cards(home, 4, 100_000, 1, register=False)
    vid, disk = kept_outcome(home, "c0001", 500, monkeypatch)
    disk.on = False
    path = home.ledger_path(TID)
    kept = KEPT.pending(path)
    KEPT.clear()
    back = tap_mock_card(home, TID, "c0001", 300)
    assert back.approved and back.recovered == [vid] and payments_of(home, vid) == 1
    for item in kept:
        KEPT.keep(path, item)
    with home.ledger(TID) as led:
        written, error = KEPT.write(led)
    assert error is None and written == [] and KEPT.pending(path) == [] and KEPT.written(path) == []
    assert payments_of(home, vid) == 1


def test_kept_payment_outlives_the_cards_log(tmp_path: Path, monkeypatch) -> None:
    """The card pays twice elsewhere before it comes back and its log holds two payments: the card cannot give
    the voucher back any more, but the terminal kept it (without that, the charge would end ``unresolved``)."""
    home = Home(tmp_path / "home")
    disk = FullDisk(monkeypatch)
    card = WalletApplet(issue_card(home.pki, "c0001", 4, 100_000, home.config.risk.caps))
    card.state = card.state.evolve(log_depth=2)

    def take(tid: str, applet: WalletApplet, amount: int):  # type: ignore[no-untyped-def]
        with Checkout(home, tid) as checkout:
            reader = MockReader()
            reader.present(applet)
            return checkout.take(reader, amount, timeout=1)

    first = take(TID, card, 900)
    assert first.kept_voucher_id and first.pending_recovery
    disk.on = False
    assert all(take("CMGQ0002", card, 10).approved for _ in range(2))  # the log now holds counters 2 and 3
    other = WalletApplet(issue_card(home.pki, "c0002", 4, 100_000, home.config.risk.caps))
    assert take(TID, other, 100).approved  # the next charge here writes the kept payment first
    back = take(TID, card, 50)
    assert back.approved and back.recovered == []
    with home.ledger(TID, readonly=True) as led:
        assert [e.amount_fen for e in led.entries(kind="payment")] == [900, 100, 50]
        assert list(led.entries(kind="unresolved")) == []


def test_pos_pay_says_pending_recovery_and_how_it_ends(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    from pos.cli.main import main

    h = tmp_path / "home"
    assert main(["--home", str(h), "card", "issue", "--tier", "4", "--balance", "100", "--count", "2"]) == 0
    disk = FullDisk(monkeypatch)
    capsys.readouterr()
    code = main(["--home", str(h), "pay", "--terminal", TID, "--card", "c0001", "--amount", "7", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["status"] == "declined" and data["pending_recovery"] is True
    assert data["reason"] == "terminal_error" and data["kept_voucher_id"].endswith("-00000001")
    assert "card's transaction log keeps it" in data["message"] and "tap the same wallet" in data["message"]
    assert main(["--home", str(h), "pay", "--terminal", TID, "--card", "c0002", "--amount", "1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("PENDING_RECOVERY ¥1.00  voucher ") and "free some disk space" in out.lower()
    KEPT.clear()  # the one-shot process exits: only the card's log and its next tap remain
    disk.on = False
    assert main(["--home", str(h), "pay", "--terminal", TID, "--card", "c0001", "--amount", "1", "--json"]) == 0
    back = json.loads(capsys.readouterr().out)
    assert back["recovered"] == [data["kept_voucher_id"]]


def test_a_gate_visitor_enters_on_a_kept_ticket_payment_once_it_is_written(tmp_path: Path, monkeypatch) -> None:
    home = Home(tmp_path / "home")
    gate = Gate(home, "HQGT0001")
    try:
        visitor = WalletApplet(issue_card(home.pki, "c0001", 4, 100_000, home.config.risk.caps))
        disk = FullDisk(monkeypatch)

        def tap():  # type: ignore[no-untyped-def]
            reader = MockReader()
            reader.present(visitor)
            return gate.admit(reader, "adult", 1, timeout=1)

        stopped = tap()
        assert not stopped.open and stopped.outcome.kept_voucher_id and stopped.outcome.pending_recovery
        assert "without paying again" in stopped.next_step("en")
        disk.on = False
        SyncLoop(home, "HQGT0001", sync=lambda: None).run_round()  # a sync round writes it (operator down)
        assert [e.amount_fen for e in gate.ledger.entries(kind="payment")] == [7000]
        entered = tap()
        assert entered.open and entered.code == PREPAID  # on the tickets paid: no second charge
        assert visitor.state.balance_fen == 100_000 - 7000
    finally:
        gate.close()
