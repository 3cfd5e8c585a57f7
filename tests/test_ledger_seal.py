"""The ledger's seal holds: a write checks the head it extends, a key is never made for a ledger with entries, a
read changes nothing, verification is incremental from a sealed checkpoint, and sync and reports refuse a ledger
that fails verification (issue 11)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pos.cli.main import main
from pos.home import Home
from pos.ledger import Ledger, LedgerError, LedgerKeyMissing, LedgerMissing, LedgerTampered
from pos.ledger.chain import DATA_JSON, entry_hash
from pos.ledger.seal import head_mac
from pos.records import day_report
from pos.sync.reports import reconcile
from pos.sync.upload import sync_once
from tests.conftest import COUNTER, Taps
from wallet.card import CHINA_TZ
from wallet.ids import voucher_id

W = "0991000000000008"
COLS = "seq, time, kind, voucher_id, wallet_id, counter, amount_fen, data, prev_hash, hash"


# -- what an attacker with the database but without the key does ---------------------------------------------------
def _raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    return conn


def rewrite(path: Path, drop: set[int] = frozenset(), amounts: dict[int, int] | None = None,  # type: ignore[assignment]
            key: bytes | None = None) -> None:
    """Delete the entries ``drop`` and set ``amounts``, renumber, point closings at their renumbered intents,
    recompute every hash and the open-intents table, and seal the head with ``key`` (else a key of one's own: the
    attacker does not have the ledger's). Everything but the head's authentication code then adds up."""
    conn = _raw(path)
    rows = [list(r) for r in conn.execute(f"SELECT {COLS} FROM entries ORDER BY seq") if r[0] not in drop]
    new_seq = {r[0]: i + 1 for i, r in enumerate(rows)}
    opened = {r[0] for r in conn.execute("SELECT seq FROM open_intents")}
    prev = "0" * 64
    for i, r in enumerate(rows):
        old = r[0]
        r[0] = i + 1
        r[6] = (amounts or {}).get(old, r[6])
        data = json.loads(r[7])
        if "intent" in data:
            data["intent"] = new_seq.get(data["intent"], data["intent"])
        r[7] = DATA_JSON(data)
        r[8] = prev
        r[9] = prev = entry_hash(*r[:9])
    conn.execute("DELETE FROM entries")
    conn.executemany(f"INSERT INTO entries ({COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    for seq in opened:
        conn.execute("UPDATE open_intents SET seq = ? WHERE seq = ?", (new_seq.get(seq, -seq), seq))
    conn.execute("DELETE FROM open_intents WHERE seq < 0")
    n = len(rows)
    conn.execute("UPDATE head SET seq = ?, hash = ?, mac = ?", (n, prev, head_mac(key or secrets.token_bytes(32), n,
                                                                                        prev)))
    conn.commit()
    conn.close()


def edit_amount(path: Path, seq: int, amount_fen: int) -> None:
    """Change one entry's amount and nothing else (its hash no longer matches)."""
    conn = _raw(path)
    conn.execute("UPDATE entries SET amount_fen = ? WHERE seq = ?", (amount_fen, seq))
    conn.commit()
    conn.close()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root`` with its mtime and size."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in [root, *root.rglob("*")]}


def pay(led: Ledger, counter: int, amount_fen: int = 100) -> None:
    led.append("payment", voucher_id=voucher_id(W, counter), wallet_id=W, counter=counter, amount_fen=amount_fen,
               data={"n": counter})


@pytest.fixture
def led(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.db")
    for c in range(1, 6):
        pay(ledger, c, 100 * c)
    yield ledger
    ledger.close()


# -- a write checks the head it extends ----------------------------------------------------------------------------
def test_a_sale_on_a_ledger_resealed_without_the_key_is_refused_and_verify_still_fails(taps: Taps) -> None:
    led = taps.ctx.ledger
    cards = [taps.card() for _ in range(3)]
    for card in cards:
        assert taps.pay(card, 500).approved
    victim = list(led.entries(kind="payment"))[1]
    rewrite(led.path, drop={victim.seq, victim.data["intent"]})  # the payment and its intent vanish
    with pytest.raises(LedgerTampered, match="head was altered"):
        led.verify(full=True)
    before = led.count()
    with pytest.raises(LedgerTampered) as refused:
        taps.pay(taps.card(), 700)  # the next sale: refused before a card is charged
    assert "nothing was written" in str(refused.value) and "pos ledger export" in str(refused.value)
    assert refused.value.problems == ["the ledger head was altered (its authentication code does not match the key)"]
    assert led.count() == before
    with pytest.raises(LedgerTampered, match="head was altered"):
        led.verify(full=True)


@pytest.mark.parametrize("tamper, problem", [
    ("UPDATE entries SET amount_fen = 1 WHERE seq = 5", "entry 5 (payment) was altered"),
    ("UPDATE entries SET prev_hash = (SELECT hash FROM entries WHERE seq = 3) WHERE seq = 5",
     "entry 5 does not follow"),
    ("DELETE FROM entries WHERE seq = 5", "the ledger ends at entry 4 but its head says 5"),
    ("DELETE FROM head", "the ledger head is missing"),
])
def test_a_write_checks_the_end_of_the_chain_it_extends(led: Ledger, tamper: str, problem: str) -> None:
    conn = _raw(led.path)
    conn.execute(tamper)
    conn.commit()
    conn.close()
    with pytest.raises(LedgerTampered, match=re.escape(problem)), led.transaction() as tx:
        tx.append("sync")
    assert led.count() == (4 if "DELETE FROM entries" in tamper else 5)


# -- the key -------------------------------------------------------------------------------------------------------
def test_a_missing_key_is_reported_and_never_replaced(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    with home.ledger(COUNTER) as led:
        pay(led, 1)
        key = led.path.with_suffix(".key")
    key.unlink()
    before = snapshot(home.root)
    code = main(["--home", str(home.root), "ledger", "verify", "--terminal", COUNTER, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["ok"] is False and any("key" in p and "missing" in p for p in out["problems"])
    with home.ledger(COUNTER, readonly=True) as ro, pytest.raises(LedgerKeyMissing, match="missing"):
        ro.verify(full=True)
    assert snapshot(home.root) == before  # nothing created, nothing touched
    with home.ledger(COUNTER) as rw:  # even opened to write: no new key, and no write
        with pytest.raises(LedgerKeyMissing, match="missing"):
            pay(rw, 2)
        with pytest.raises(LedgerKeyMissing):
            rw.verify()
    assert not key.exists()


def test_a_replaced_key_is_a_hard_error(led: Ledger) -> None:
    key = led.path.with_suffix(".key")
    key.write_bytes(secrets.token_bytes(32))
    again = Ledger(led.path)
    with pytest.raises(LedgerTampered, match="head was altered"):
        pay(again, 9)
    with pytest.raises(LedgerTampered, match="head was altered"):
        again.verify()
    assert again.count() == 5


def test_a_key_is_made_only_with_a_new_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "t" / "ledger.db"
    with Ledger(path) as new:
        assert path.with_suffix(".key").stat().st_mode & 0o777 == 0o600
        assert new.verify().entries == 0


# -- reading changes nothing ---------------------------------------------------------------------------------------
def _freeze(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)


def _thaw(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


def test_a_read_only_open_of_a_read_only_home_creates_and_changes_nothing(home: Home,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with home.ledger(COUNTER) as led:
        for c in range(1, 4):
            pay(led, c)
    out = home.root.parent / "export.csv"
    _freeze(home.root)  # as root this stops nothing: the listings and times below are the proof
    try:
        before = snapshot(home.root)
        with home.ledger(COUNTER, readonly=True) as ro:
            assert ro.verify(full=True).entries == 3
            assert ro.verify().entries == 3  # incremental: no checkpoint can be stored, none is
            assert [e.counter for e in ro.entries(kind="payment")] == [1, 2, 3]
            with pytest.raises(LedgerError, match="read-only"):
                pay(ro, 4)
        assert main(["--home", str(home.root), "ledger", "verify", "--terminal", COUNTER]) == 0
        assert main(["--home", str(home.root), "ledger", "list", "--terminal", COUNTER]) == 0
        assert main(["--home", str(home.root), "ledger", "export", "--terminal", COUNTER, "--csv", str(out)]) == 0
        with pytest.raises(LedgerMissing):
            home.ledger("CMGQ0002", readonly=True)
        assert snapshot(home.root) == before
    finally:
        _thaw(home.root)
    capsys.readouterr()


def test_a_read_only_open_beside_a_running_terminal_sees_its_latest_entries(led: Ledger) -> None:
    with Ledger.open_readonly(led.path) as ro:  # the terminal's connection is open: its write-ahead log exists
        assert ro.count() == 5
        pay(led, 6)
        assert ro.count() == 6 and ro.verify(full=True).entries == 6


def test_a_missing_ledger_is_not_created_by_reading(tmp_path: Path) -> None:
    with pytest.raises(LedgerMissing):
        Ledger.open_readonly(tmp_path / "nope" / "ledger.db")
    assert list(tmp_path.iterdir()) == []


# -- incremental verification --------------------------------------------------------------------------------------
def test_verification_re_hashes_only_what_follows_the_checkpoint(led: Ledger) -> None:
    assert led.verify().rehashed == 5
    for c in range(6, 9):
        pay(led, c)
    report = led.verify()
    assert (report.entries, report.rehashed, report.full) == (8, 3, False)
    assert led.verify().rehashed == 0
    full = led.verify(full=True)
    assert (full.entries, full.rehashed, full.full) == (8, 8, True)


def test_incremental_verification_catches_a_tamper_before_the_checkpoint(led: Ledger) -> None:
    led.verify()  # the checkpoint: entries 1..5
    pay(led, 6)
    edit_amount(led.path, 2, 99_999)  # its hash is stale, and it is not re-hashed: the sealed fingerprint differs
    with pytest.raises(LedgerTampered, match=r"up to the verified checkpoint \(entry 5\) were changed"):
        led.verify()
    with pytest.raises(LedgerTampered, match=r"entry 2 .* altered"):
        led.verify(full=True)


def test_incremental_verification_catches_a_chain_rewritten_through_the_checkpoint(led: Ledger) -> None:
    led.verify()
    rewrite(led.path, drop={2}, key=Ledger(led.path)._key)  # even with a valid head the checkpoint no longer fits
    with pytest.raises(LedgerTampered, match=r"up to the verified checkpoint \(entry 5\) were rewritten"):
        led.verify()


def test_incremental_verification_catches_a_tamper_after_the_checkpoint(led: Ledger) -> None:
    led.verify()
    pay(led, 6)
    pay(led, 7)
    edit_amount(led.path, 6, 1)
    with pytest.raises(LedgerTampered, match=r"entry 6 .* altered"):
        led.verify()


def test_a_forged_or_missing_checkpoint_costs_a_full_walk_not_a_pass(led: Ledger) -> None:
    led.verify()
    edit_amount(led.path, 3, 7)
    conn = _raw(led.path)
    conn.execute("UPDATE verified SET fingerprint = '[0, 0, 0, 0]'")  # hide the edit: without the key it shows
    conn.commit()
    with pytest.raises(LedgerTampered) as exc:
        led.verify()
    assert exc.value.problems[0].startswith("the verified checkpoint was altered")
    assert any("entry 3 (payment) was altered" in p for p in exc.value.problems)
    conn.execute("DELETE FROM verified")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerTampered, match=r"entry 3 .* altered"):
        led.verify()


# -- sync and reports refuse a ledger that fails verification ------------------------------------------------------
class NoOperator:
    """An operator client that must not be used: it records every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise AssertionError(f"the operator was asked: {name}")
        return call


@pytest.fixture
def tampered(taps: Taps, request: pytest.FixtureRequest) -> Taps:
    for amount in (300, 400, 500):
        assert taps.pay(taps.card(), amount).approved
    led = taps.ctx.ledger
    if request.param == "checkpointed":
        led.verify()  # the payments lie before the checkpoint
    victim = list(led.entries(kind="payment"))[1]
    if request.param == "deleted":
        rewrite(led.path, drop={victim.seq, victim.data["intent"]})
    elif request.param == "recomputed":
        rewrite(led.path, amounts={victim.seq: 1})
    else:
        edit_amount(led.path, victim.seq, 1)
    return taps


@pytest.mark.parametrize("tampered", ["deleted", "edited", "recomputed", "checkpointed"], indirect=True)
def test_sync_and_reports_refuse_a_tampered_ledger_and_upload_nothing(tampered: Taps) -> None:
    home, led = tampered.home, tampered.ctx.ledger
    count = led.count()
    operator = NoOperator()
    with pytest.raises(LedgerTampered) as exc:
        sync_once(home, COUNTER, client=operator)  # type: ignore[arg-type]
    text = str(exc.value)
    assert text.startswith(f"the ledger of {COUNTER} failed verification: ")
    assert text.endswith(f"export it with `pos ledger export --terminal {COUNTER} --csv FILE` and contact the operator")
    with pytest.raises(LedgerTampered, match=f"the ledger of {COUNTER} failed verification"):
        reconcile(home, COUNTER, client=operator)  # type: ignore[arg-type]
    with home.ledger(COUNTER) as clerk, pytest.raises(LedgerTampered, match="failed verification"):
        day_report(clerk, dt.datetime.now(CHINA_TZ).date())
    assert operator.calls == [] and led.count() == count  # nothing uploaded, nothing recorded
    with Ledger.open_readonly(led.path) as ro:  # the forensic export still reads everything
        assert len(list(ro.entries())) == count


def test_sync_verifies_incrementally_and_still_syncs_a_sound_ledger(taps: Taps) -> None:
    assert taps.pay(taps.card(), 300).approved
    led = taps.ctx.ledger
    led.verify()
    operator = NoOperator()
    with pytest.raises(AssertionError):  # verification passed: it went on to the operator
        sync_once(taps.home, COUNTER, client=operator)  # type: ignore[arg-type]
    assert operator.calls == ["settle_batch"]


def test_the_sealed_files_stay_private(led: Ledger) -> None:
    assert os.stat(led.path.with_suffix(".key")).st_mode & 0o077 == 0
