"""The ledger: append-only, hash-chained, authenticated head; tampering behind its back is found."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pos.ledger import Ledger, LedgerError, LedgerTampered, PaymentRecorded
from wallet.ids import voucher_id

W = "0991000000000008"  # the wallet of the fixture's payments (counters 1..5)


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.db")
    for i in range(5):
        ledger.append("payment", voucher_id=voucher_id(W, i + 1), wallet_id=W, counter=i + 1, amount_fen=100 * (i + 1),
                      data={"n": i})
    return ledger


def _raw(led: Ledger) -> sqlite3.Connection:
    conn = sqlite3.connect(led.path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    return conn


def test_settings_are_durable(led: Ledger) -> None:
    assert led.durability() == ("wal", 2)  # WAL, synchronous=FULL


def test_clean_ledger_verifies(led: Ledger) -> None:
    report = led.verify()
    assert report.entries == 5 and report.head_seq == 5


def test_update_and_delete_are_refused(led: Ledger) -> None:
    conn = sqlite3.connect(led.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE entries SET amount_fen = 1 WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE seq = 2")
    conn.rollback()
    conn.close()
    led.verify()


def test_one_payment_per_voucher_id(led: Ledger) -> None:
    with pytest.raises(PaymentRecorded):
        led.append("payment", voucher_id=voucher_id(W, 2), wallet_id=W, counter=2, amount_fen=999)
    assert led.count() == 5
    assert led.payment(voucher_id(W, 2)).amount_fen == 200
    led.verify()


@pytest.mark.parametrize("fields", [
    {"voucher_id": "v1", "wallet_id": W, "counter": 9},            # not made of its wallet and counter
    {"voucher_id": voucher_id(W, 9), "wallet_id": W, "counter": 8},
    {"voucher_id": voucher_id(W, 9), "wallet_id": None, "counter": 9},
])
def test_a_payment_voucher_id_is_its_wallet_and_counter(led: Ledger, fields: dict) -> None:
    with pytest.raises(LedgerError, match="wallet id and counter"):
        led.append("payment", amount_fen=1, **fields)
    assert led.count() == 5
    led.verify()


@pytest.mark.parametrize("text", ["", "v1", f"{W}-1", f"{W}-000000001", f"{W}-4294967296", f"{W[:-1]}-00000001",
                                  f"{W}-0000000１"])
def test_what_is_not_a_voucher_id_finds_no_payment(led: Ledger, text: str) -> None:
    assert led.payment(text) is None


def test_edit_behind_its_back_is_found(led: Ledger) -> None:
    conn = _raw(led)
    conn.execute("UPDATE entries SET amount_fen = 1 WHERE seq = 3")
    conn.commit()
    with pytest.raises(LedgerTampered, match=r"entry 3 .* altered"):
        led.verify()


def test_deleted_middle_entry_is_found(led: Ledger) -> None:
    conn = _raw(led)
    conn.execute("DELETE FROM entries WHERE seq = 2")
    conn.commit()
    with pytest.raises(LedgerTampered, match="missing"):
        led.verify()


def test_cut_tail_is_found_even_with_head_rewritten(led: Ledger) -> None:
    conn = _raw(led)
    conn.execute("DELETE FROM entries WHERE seq = 5")
    prev = conn.execute("SELECT hash FROM entries WHERE seq = 4").fetchone()[0]
    conn.execute("UPDATE head SET seq = 4, hash = ?", (prev,))
    conn.commit()
    with pytest.raises(LedgerTampered, match="head was altered"):
        led.verify()


def test_inserted_entry_is_found(led: Ledger) -> None:
    conn = _raw(led)
    row = conn.execute("SELECT * FROM entries WHERE seq = 5").fetchone()
    conn.execute("INSERT INTO entries VALUES (6, ?, 'payment', 'v9', 'w', 9, 99999, '{}', ?, ?)",
                 (row[1], row[9], "f" * 64))
    conn.commit()
    with pytest.raises(LedgerTampered):
        led.verify()


def test_reopen_keeps_everything(led: Ledger) -> None:
    path = led.path
    led.close()
    again = Ledger(path)
    assert again.count() == 5
    again.append("payment", voucher_id=voucher_id(W, 6), wallet_id=W, counter=6, amount_fen=1)
    assert again.verify().entries == 6


def test_failed_append_changes_nothing(led: Ledger) -> None:
    with pytest.raises(TypeError):
        led.append("payment", voucher_id=voucher_id(W, 7), wallet_id=W, counter=7, data={"bad": object()})
    assert led.count() == 5
    led.verify()


def test_damaged_key_is_a_typed_error(tmp_path: Path) -> None:
    from pos.ledger import LedgerKeyMissing

    Ledger(tmp_path / "l.db").close()
    (tmp_path / "l.key").write_bytes(b"short")
    led = Ledger(tmp_path / "l.db")  # opens (to read), but is never written nor trusted
    with pytest.raises(LedgerKeyMissing, match="damaged"):
        led.append("sync")
    with pytest.raises(LedgerKeyMissing, match="damaged"):
        led.verify()
    assert (tmp_path / "l.key").read_bytes() == b"short"


def test_corrupted_file_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError):
        Ledger(tmp_path / "x.db")


def test_wallet_standing_follows_the_latest_denylist_entry_and_the_highest_counter(led: Ledger) -> None:
    assert led.wallet_standing(W) == (False, 5) == (led.is_denylisted(W), led.max_counter(W))
    assert led.wallet_standing("nobody") == (False, 0)
    led.apply_denylist(1, [W, "x"])
    assert led.wallet_standing(W) == (True, 5) and led.wallet_standing("x") == (True, 0)
    led.apply_denylist(2, [], [W])
    assert led.wallet_standing(W) == (False, 5) and led.wallet_standing("x") == (True, 0)
    led.append("settlement", voucher_id=voucher_id(W, 9), wallet_id=W, counter=9, data={"status": "settled"})
    assert led.wallet_standing(W) == (False, 5)  # only payments count


def test_an_older_ledger_is_migrated_in_place_keeping_every_certificate(tmp_path: Path) -> None:
    import sqlite_utils

    from pos.ledger.schema import MIGRATIONS

    path = tmp_path / "ledger.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="m003_certificates_without_rowid")  # as the previous release left it
    old.execute("INSERT INTO certificates (fingerprint, der) VALUES ('aa', x'3082'), ('bb', x'3083')")
    old.conn.commit()
    old.close()
    led = Ledger(path)
    raw = sqlite3.connect(path)
    sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'certificates'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    assert led.certificate("aa") == b"\x30\x82" and led.certificate("bb") == b"\x30\x83"
    with led.transaction() as tx:
        tx.add_certificate("aa", b"\x30\x82")  # still one row per fingerprint
    assert raw.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 2
    raw.close()
    assert led.wallet_standing("nobody") == (False, 0)  # m004's indexes are in place too
    led.verify()


def test_entry_times_are_utc_iso_with_milliseconds(led: Ledger) -> None:
    import datetime as dt

    from pos.ledger import utc_now

    before = dt.datetime.now(dt.UTC)
    stamp = utc_now()
    after = dt.datetime.now(dt.UTC)
    assert len(stamp) == 24 and stamp[10] == "T" and stamp.endswith("Z")
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - dt.timedelta(milliseconds=1) <= parsed <= after
    assert led.append("void", data={}).time[:4] == stamp[:4]


def test_entry_times_cross_second_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatted second is reused within a second only: each stamp is the clock's own."""
    from pos.ledger import chain as ledger_module

    for ns, text in [(1_790_000_000_999_000_000, "2026-09-21T14:13:20.999Z"),
                     (1_790_000_001_000_000_000, "2026-09-21T14:13:21.000Z"),
                     (1_790_000_001_500_000_000, "2026-09-21T14:13:21.500Z"),
                     (1_700_000_000_000_000_000, "2023-11-14T22:13:20.000Z")]:
        monkeypatch.setattr(ledger_module.time, "time_ns", lambda ns=ns: ns)
        assert ledger_module.utc_now() == text


def test_lookups_by_voucher_and_wallet_use_indexes(led: Ledger) -> None:
    """The queries a tap, the outbox and the sync make are index searches, never scans of all entries."""
    plans = {
        "outbox": "SELECT seq FROM entries p WHERE p.kind = 'payment' AND NOT EXISTS (SELECT 1 FROM entries s "
                  "WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)",
        "refunds": "SELECT COUNT(*) FROM entries WHERE kind = 'refund' AND voucher_id = 'v1'",
        "payment": f"SELECT seq FROM entries WHERE kind = 'payment' AND wallet_id = '{W}' AND counter = 3",
        "standing": f"SELECT MAX(counter) FROM entries WHERE wallet_id = '{W}' AND kind = 'payment'",
        "denylist": f"SELECT seq FROM entries WHERE kind = 'denylist' AND wallet_id = '{W}'",
    }
    expected = {"outbox": "entries_settlement", "refunds": "entries_refund", "payment": "entries_payment",
                "standing": "entries_payment", "denylist": "entries_denylist"}
    raw = sqlite3.connect(led.path)
    for name, sql in plans.items():
        detail = " ".join(r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + sql))
        assert f"USING INDEX {expected[name]}" in detail or f"USING COVERING INDEX {expected[name]}" in detail, \
            (name, detail)
    names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not names & {"entries_kind", "entries_wallet", "entries_voucher", "entries_one_payment",
                        "entries_kind_wallet"}


def test_an_intent_writes_no_index_and_a_payment_one(led: Ledger) -> None:
    """Write amplification of the two commits of every charge, in pages (WAL frames) per commit."""
    def frames(fn: object) -> int:
        before = led.path.with_name(led.path.name + "-wal").stat().st_size
        fn()  # type: ignore[operator]
        return (led.path.with_name(led.path.name + "-wal").stat().st_size - before) // (4096 + 24)

    raw = sqlite3.connect(led.path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    intent = led.append("intent", amount_fen=5, data={"challenge": "ab" * 16, "owner": "1:1"})
    assert frames(lambda: _intent(led)) == 3  # the entry, the head, the open intent
    assert frames(lambda: led.append("payment", voucher_id=voucher_id(W, 6), wallet_id=W, counter=6, amount_fen=5,
                                     data={"intent": intent.seq})) == 4  # entry, its index, head, closed intent


def test_entry_hash_is_the_sha256_of_the_documented_json() -> None:
    """The chain's definition does not change with the encoder: compact JSON, non-ASCII kept, data as text."""
    import hashlib
    import json

    from pos.ledger.chain import entry_hash

    args = (7, "2026-11-27T10:00:00.000Z", "payment", "v1", "w", 3, 1230, '{"note":"苏州 \\"quoted\\""}', "0" * 64)
    reference = json.dumps(list(args), separators=(",", ":"), ensure_ascii=False)
    assert entry_hash(*args) == hashlib.sha256(reference.encode()).hexdigest()


def _intent(led: Ledger, amount: int = 100) -> int:
    return led.append("intent", amount_fen=amount, data={"challenge": "ab" * 16, "owner": "1:1"}).seq


def test_open_intents_in_memory_follow_other_connections(led: Ledger, tmp_path: Path) -> None:
    """Another connection (a second terminal process on the same file) opening, tearing and closing intents is
    seen by the next read: the in-memory view is dropped when the database changed behind it."""
    first = _intent(led)
    assert [i.seq for i in led.open_intents()] == [first]
    other = Ledger(led.path)
    try:
        second = _intent(other, 200)
        assert [i.seq for i in led.open_intents()] == [first, second]
        other.append("torn", wallet_id="0991000000000008", counter=4, amount_fen=200, data={"intent": second})
        torn = led.open_intents("0991000000000008")
        assert [(i.seq, i.counter) for i in torn] == [(second, 4)]
        other.append("void", amount_fen=100, data={"intent": first})
        assert [i.seq for i in led.open_intents()] == [second]
    finally:
        other.close()


def test_open_intents_in_memory_follow_own_writes_and_rollbacks(led: Ledger) -> None:
    a, b = _intent(led), _intent(led)
    led.open_intents()  # the view is loaded
    led.append("torn", wallet_id="0991000000000008", counter=2, amount_fen=100, data={"intent": a})
    led.append("payment", voucher_id=voucher_id("0991000000000009", 1), wallet_id="0991000000000009", counter=1,
               amount_fen=100,
               data={"intent": b})
    with pytest.raises(RuntimeError, match="undone"), led.transaction() as tx:
        tx.append("void", amount_fen=100, data={"intent": a})
        tx.append("intent", amount_fen=5, data={"challenge": "cd" * 16, "owner": "1:1"})
        assert [i.seq for i in led.open_intents()] == [b + 4]  # inside the transaction: the table as it stands
        raise RuntimeError("undone")
    view = led.open_intents()
    assert [(i.seq, i.wallet_id, i.counter) for i in view] == [(a, "0991000000000008", 2)]
    fresh = Ledger(led.path)  # a new connection reads the table itself
    try:
        assert view == fresh.open_intents()  # the view is the table
    finally:
        fresh.close()
    led.verify()


def test_a_broken_link_is_found_even_when_every_hash_and_the_head_are_recomputed(led: Ledger) -> None:
    """Entry 3 is made to follow entry 1 (as if entry 2 were cut out of the chain but kept in the table), and every
    hash from there on and the sealed head are recomputed with the key: only the previous-hash link shows it."""
    from pos.ledger.chain import entry_hash
    from pos.ledger.seal import head_mac, load_key

    conn = _raw(led)
    rows = {r[0]: list(r) for r in conn.execute("SELECT seq, time, kind, voucher_id, wallet_id, counter, amount_fen, "
                                                "data, prev_hash, hash FROM entries ORDER BY seq")}
    rows[3][8] = rows[1][9]
    for seq in range(3, 6):
        if seq > 3:
            rows[seq][8] = rows[seq - 1][9]
        rows[seq][9] = entry_hash(*rows[seq][:9])
        conn.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", (rows[seq][8], rows[seq][9], seq))
    conn.execute("UPDATE head SET hash = ?, mac = ?", (rows[5][9], head_mac(load_key(led.path), 5, rows[5][9])))
    conn.commit()
    with pytest.raises(LedgerTampered) as exc:
        led.verify()
    assert str(exc.value) == "entry 3 does not follow the entry before it (chain broken)"
