"""The ledger's batch mode (the fleet simulator's): transactions inside a batch are sealed and roll back one by one
as outside it, nothing is visible to another connection before a flush, and a batch that fails leaves the ledger
as it was at the last flush, intact and writable."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from pos.ledger import Ledger, PaymentRecorded
from wallet.ids import voucher_id

W = "0991000000000008"


def _pay(ledger: Ledger, counter: int) -> None:
    with ledger.transaction() as tx:
        intent = tx.append("intent", amount_fen=100, data={"challenge": secrets.token_bytes(16).hex(), "owner": "x"})
        tx.append("payment", voucher_id=voucher_id(W, counter), wallet_id=W, counter=counter, amount_fen=100,
                  data={"intent": intent.seq})


def _count_elsewhere(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def test_a_batch_is_invisible_until_flushed_and_its_ledger_verifies(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with ledger.batch() as batch:
        for c in range(1, 4):
            _pay(ledger, c)
        assert ledger.count() == 6 and ledger.open_intents() == []  # this connection sees its own batch
        assert _count_elsewhere(ledger.path) == 0
        assert batch.flush() == 3
        assert _count_elsewhere(ledger.path) == 6
        _pay(ledger, 4)
    assert _count_elsewhere(ledger.path) == 8
    assert ledger.verify(full=True).entries == 8
    _pay(ledger, 5)  # out of batch mode: durable transactions again
    assert Ledger(ledger.path).verify(full=True).head_seq == 10


def test_a_failed_transaction_in_a_batch_rolls_back_alone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with ledger.batch():
        _pay(ledger, 1)
        with pytest.raises(PaymentRecorded):
            _pay(ledger, 1)  # the same voucher again: this transaction only
        _pay(ledger, 2)
    kinds = [e.kind for e in ledger.entries()]
    assert kinds == ["intent", "payment", "intent", "payment"]
    assert [e.seq for e in ledger.entries()] == [1, 2, 3, 4]
    assert ledger.verify(full=True).entries == 4


def test_a_batch_that_fails_leaves_the_ledger_at_its_last_flush(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with pytest.raises(RuntimeError), ledger.batch() as batch:
        _pay(ledger, 1)
        batch.flush()
        _pay(ledger, 2)
        raise RuntimeError("the shard process fails mid-batch")
    assert [e.counter for e in ledger.entries(kind="payment")] == [1]
    assert ledger.open_intents() == []
    _pay(ledger, 2)  # the head check runs again against what is on disk, not what the lost batch sealed
    assert Ledger(ledger.path).verify(full=True).entries == 4


def test_a_batch_needs_a_ledger_with_no_transaction_open(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    with ledger.batch(), pytest.raises(RuntimeError):
        ledger.batch().begin()
