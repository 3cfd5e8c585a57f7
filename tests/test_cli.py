"""The CLI contract: names, flags, JSON shapes, exit statuses; concurrent payments on one card store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.cli.main import main


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, dict]:
    code = main(["--home", str(home), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.fixture
def h(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_merchants(capsys, h) -> None:
    code, data = run(capsys, h, "merchants")
    assert code == 0
    ids = [m["id"] for m in data["merchants"]]
    assert len(ids) >= 5 and all(len(i) == 15 for i in ids)
    kinds = {t["kind"] for m in data["merchants"] for t in m["terminals"]}
    assert kinds == {"counter", "gate"}


def test_issue_pay_show_list_ledger(capsys, h, tmp_path) -> None:
    code, data = run(capsys, h, "card", "issue", "--tier", "4", "--balance", "1000", "--count", "2")
    assert code == 0 and [c["card_id"] for c in data["cards"]] == ["c0001", "c0002"]
    assert data["cards"][0]["balance_fen"] == 100_000 and len(data["cards"][0]["wallet_id"]) == 16

    code, paid = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "12.3")
    assert code == 0
    assert paid["status"] == "approved" and paid["reason"] is None
    assert paid["amount_fen"] == 1230 and paid["balance_after_fen"] == 98_770
    assert set(paid) >= {"status", "reason", "message", "voucher_id", "amount_fen", "balance_after_fen"}

    code, declined = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0002", "--amount", "600")
    assert code == 1 and declined["status"] == "declined" and declined["reason"] == "over_offline_limit"

    code, shown = run(capsys, h, "card", "show", "c0001")
    assert shown["balance_fen"] == 98_770 and shown["counter"] == 1
    assert shown["offline_usage"] == {"amount_fen": 1230, "count": 1}

    code, listed = run(capsys, h, "card", "list")
    assert [c["card_id"] for c in listed["cards"]] == ["c0001", "c0002"]

    code, led = run(capsys, h, "ledger", "list", "--terminal", "CMGQ0001")
    pays = [e for e in led["entries"] if e["kind"] == "payment"]
    assert [(e["voucher_id"], e["amount_fen"]) for e in pays] == [(paid["voucher_id"], 1230)]
    assert {"seq", "kind", "voucher_id", "wallet_id", "amount_fen", "time"} <= set(pays[0])

    code, ver = run(capsys, h, "ledger", "verify", "--terminal", "CMGQ0001")
    assert code == 0 and ver["ok"] is True

    out = tmp_path / "ledger.csv"
    code, exp = run(capsys, h, "ledger", "export", "--terminal", "CMGQ0001", "--csv", str(out))
    assert code == 0 and exp["entries"] >= 2
    text = out.read_text()
    assert "12.30" in text and paid["voucher_id"] in text


def test_tear_then_retap_recovers(capsys, h) -> None:
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")
    code, torn = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "5",
                     "--tear-after", "pay")
    assert code == 1 and torn["reason"] == "card_removed" and torn["pending_recovery"] is True
    code, nxt = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1")
    assert code == 0 and nxt["recovered"] == [torn["wallet_id"] + "-00000001"]
    code, shown = run(capsys, h, "card", "show", "c0001")
    assert shown["balance_fen"] == 10_000 - 600
    code, retapped = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "2",
                         "--tear-after", "5", "--retap")
    assert code == 0 and retapped["status"] == "approved"


def test_load_and_clone(capsys, h) -> None:
    run(capsys, h, "card", "issue", "--tier", "3", "--balance", "10")
    code, loaded = run(capsys, h, "card", "load", "c0001", "--amount", "90")
    assert code == 0 and loaded["balance_fen"] == 10_000 and loaded["load_counter"] == 1
    code, clone = run(capsys, h, "card", "clone", "c0001")
    assert code == 0 and clone["card_id"] == "c0002"
    code, shown = run(capsys, h, "card", "show", "c0002")
    assert shown["clone_of"] == "c0001" and shown["balance_fen"] == 10_000
    code, keyless = run(capsys, h, "card", "clone", "c0001", "--without-key")
    assert code == 0 and keyless["card_id"] == "c0003" and keyless["with_key"] is False
    code, out = run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0003", "--amount", "1")
    assert code == 1 and out["reason"] == "bad_signature"  # it reads as c0001 but cannot sign as it


def test_expired_and_foreign_cards_are_declined(capsys, h) -> None:
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100", "--expired")
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100", "--foreign")
    assert run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1")[1]["reason"] == \
        "expired_certificate"
    assert run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0002", "--amount", "1")[1]["reason"] == \
        "unknown_issuer"


@pytest.mark.parametrize("args", [
    ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "-1"],
    ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1.234"],
    ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "abc"],
    ["pay", "--terminal", "NOPE0001", "--card", "c0001", "--amount", "1"],
    ["pay", "--terminal", "CMGQ0001", "--card", "c0009", "--amount", "1"],
    ["pay", "--terminal", "CMGQ0001", "--card", "../../etc", "--amount", "1"],
    ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1", "--tear-after", "payy"],
    ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1", "--tear-after", "-1"],
    ["card", "issue", "--tier", "4", "--balance", "20000"],
    ["card", "issue", "--tier", "5", "--balance", "1"],
    ["card", "show", "c0042"],
])
def test_bad_input_exits_2_and_writes_nothing(capsys, h, args) -> None:
    code = None
    try:
        code = main(["--home", str(h), *args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip()
    assert not (h / "cards").exists() or not list((h / "cards").glob("c*.json"))
    assert not (h / "terminals").exists() or not list((h / "terminals").rglob("ledger.db"))


def test_bad_config_names_file_key_and_problem(capsys, h, tmp_path) -> None:
    bad = tmp_path / "merchants.yaml"
    bad.write_text((Path(__file__).parent.parent / "merchants.yaml").read_text().replace("CMGQ0002", "CMGQ02"))
    code = main(["--home", str(h), "--config", str(bad), "merchants"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and "merchants[0].terminals[1].id" in err


def test_tampered_ledger_verify_exits_1(capsys, h) -> None:
    import sqlite3

    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")
    run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1")
    conn = sqlite3.connect(h / "terminals" / "CMGQ0001" / "ledger.db")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET amount_fen = 1 WHERE kind = 'payment'")
    conn.commit()
    code, data = run(capsys, h, "ledger", "verify", "--terminal", "CMGQ0001")
    assert code == 1 and data["ok"] is False and any("altered" in p for p in data["problems"])


def test_concurrent_cli_payments_on_one_card_store(capsys, h) -> None:
    """Several processes pay with the same card at two terminals at once: every approval is one debit."""
    env = {**os.environ, "POS_HOME": str(h)}
    pos = [sys.executable, "-m", "pos.cli.main"]
    assert run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")[0] == 0
    procs = [subprocess.Popen([*pos, "pay", "--terminal", tid, "--card", "c0001", "--amount", "3", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tid in ("CMGQ0001", "CMGQ0002") * 3]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    approved = [r for r in results if r["status"] == "approved"]
    assert len(approved) == 6
    assert len({r["voucher_id"] for r in approved}) == 6
    shown = run(capsys, h, "card", "show", "c0001")[1]
    assert shown["balance_fen"] == 10_000 - 6 * 300 and shown["counter"] == 6
    total = 0
    for tid in ("CMGQ0001", "CMGQ0002"):
        led = run(capsys, h, "ledger", "list", "--terminal", tid, "--kind", "payment")[1]
        total += sum(e["amount_fen"] for e in led["entries"])
    assert total == 6 * 300


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict, str]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def test_a_full_disk_is_a_typed_error_exit_1_with_the_path(capsys, h, monkeypatch) -> None:
    import errno

    import wallet.store

    def full(path: Path, data: bytes, mode: int = 0o644) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(wallet.store, "write_atomic", full)
    code, data, err = _err(capsys, ["--home", str(h), "card", "issue", "--tier", "4", "--balance", "1", "--count",
                                    "3"])
    assert code == 1 and data["code"] == "storage" and str(h / "cards" / "c0001.json") in data["error"]
    assert "is full: free some space" in data["error"] and len(err.splitlines()) == 1
    assert not list((h / "cards").glob("c*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_card_issue_on_a_really_full_tmpfs(capsys, tmp_path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        codes = [_err(capsys, ["--home", str(disk / "h"), "card", "issue", "--tier", "4", "--balance", "1",
                               "--count", "10"]) for _ in range(2)]
        assert {c for c, _, _ in codes} <= {0, 1} and codes[-1][0] == 1
        assert all(d["code"] == "storage" and "is full" in d["error"] for c, d, _ in codes if c == 1)
        issued = [c["card_id"] for code, d, _ in codes if code == 0 for c in d["cards"]]
        on_disk = sorted(p.stem for p in (disk / "h" / "cards").glob("c*"))
        assert on_disk == sorted(issued) == [f"c{n:04d}" for n in range(1, len(issued) + 1)]  # none skipped, none half
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # the in-process operator may hold its db


@pytest.fixture
def read_only_copy(tmp_path: Path, h: Path, capsys) -> Iterator[Path]:
    """A used home, then the same home read-only (a read-only bind mount as root, else permission bits)."""
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")
    run(capsys, h, "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1")
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = os.geteuid() == 0 and not subprocess.run(["mount", "--bind", str(h), str(ro)]).returncode
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
    else:
        ro.rmdir()
        ro = h
        for p in [h, *h.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        yield ro
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_home_can_be_listed_and_writes_fail_typed(capsys, read_only_copy) -> None:
    ro = read_only_copy
    code, listed = run(capsys, ro, "card", "list")
    assert code == 0 and [c["card_id"] for c in listed["cards"]] == ["c0001"]
    code, shown = run(capsys, ro, "card", "show", "c0001")
    assert code == 0 and shown["balance_fen"] == 9_900
    code, data, _ = _err(capsys, ["--home", str(ro), "card", "load", "c0001", "--amount", "1"])
    assert code in (1, 2) and data["code"] in ("storage", "bad_path") and str(ro) in data["error"]


def test_load_refused_by_the_operator_exits_1(capsys, h) -> None:
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")
    code, data = run(capsys, h, "card", "load", "c0001", "--amount", "99999")
    assert code == 1 and data["status"] == "refused" and data["reason"] == "over_balance_limit"


def test_a_torn_pay_says_its_next_step_once(capsys, h) -> None:
    run(capsys, h, "card", "issue", "--tier", "4", "--balance", "100")
    capsys.readouterr()
    code = main(["--home", str(h), "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1",
                 "--tear-after", "pay"])
    out = capsys.readouterr().out
    assert code == 1 and out.count("tap the same wallet again") == 1


def test_a_second_ui_on_a_running_terminal_is_bad_usage(tmp_path) -> None:
    from ecny_nfc.mock import MockReader
    from pos.cards.tap_socket import TapServer
    from pos.cli.errors import classify
    from pos.home import Home
    from pos.runtime import Runtime

    home = Home(tmp_path / "h")
    rt = Runtime(home, "CMGQ0001", MockReader())
    rt.listen()
    try:
        with pytest.raises(Exception, match="already running") as err:
            TapServer(home, "CMGQ0001", Runtime(home, "CMGQ0001", MockReader()).broker).start()  # type: ignore[arg-type]
        assert classify(err.value) == ("invalid_input", 2)
    finally:
        rt.close()
