"""Operator start-up and storage: warming up writes nothing; reads never wait for a writer."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from bank.auth import TerminalRecord
from bank.schema import make_engine, metadata, read_only, wallets
from bank.service import Operator
from wallet.pki import OperatorPki

PKI = OperatorPki.create()


def _counts(op: Operator) -> dict[str, int]:
    with read_only(op.engine) as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in metadata.sorted_tables}


def test_warm_up_writes_nothing_and_settling_works_after(operator_db: str) -> None:
    op = Operator(make_engine(operator_db), PKI, {"CMGQ0001": "320508000000101"},
                  verify_threads=2)
    try:
        before = _counts(op)
        op.warm_up()
        op.warm_up()  # twice is harmless
        assert _counts(op) == before
        assert op.verifier.pool is not None  # the helpers are running
        assert op.settle(TerminalRecord("CMGQ0001", "320508000000101"), []) == []
    finally:
        op.close()


def test_warm_up_of_a_fault_injecting_operator_skips_the_commit(tmp_path: Path) -> None:
    op = Operator(make_engine(f"sqlite:///{tmp_path / 'op.db'}"), PKI, fault="crash_before_commit")
    try:
        op.warm_up()  # would have exited the process had it run the synthetic commit
        assert _counts(op)["vouchers"] == 0
    finally:
        op.close()


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'op.db'}")
    try:
        with engine.begin() as writer:  # BEGIN IMMEDIATE: holds the write lock until the block ends
            writer.execute(wallets.insert().values(wallet_id="0991000000000001", tier=4, status="active",
                                                   created_ms=0))
            done = threading.Event()

            def read() -> None:
                with read_only(engine) as conn:
                    assert conn.execute(select(func.count()).select_from(wallets)).scalar() == 0  # a snapshot
                done.set()

            threading.Thread(target=read).start()
            assert done.wait(5)  # answered while the writer still holds the lock: a read never waits for it
        with read_only(engine) as conn:
            assert conn.execute(select(func.count()).select_from(wallets)).scalar() == 1
    finally:
        engine.dispose()
