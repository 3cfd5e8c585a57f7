"""Every reading command on a read-only copy of a used home (issue 16): the card and ledger listings, the ledger's
verification and export, and ``pos report`` against the operator; nothing on the copy is written."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pos.cli.main import main
from pos.home import Home
from tests.support.shop import Shop, shop_session

TID = "CMGQ0001"


@pytest.fixture
def read_only_shop(tmp_path: Path) -> Iterator[tuple[Shop, Path, str]]:
    """A shop whose terminal sold twice (one uploaded, one not), and its home mounted read-only (permission bits
    when the test cannot mount)."""
    with shop_session(Home(tmp_path / "home")) as shop:
        shop.provision(TID)
        (card,) = shop.cards(1)
        shop.pay(TID, card, 100)
        shop.sync(TID)
        shop.pay(TID, card, 200)
        ro = tmp_path / "ro"
        ro.mkdir()
        mounted = os.geteuid() == 0 and not subprocess.run(["mount", "--bind", str(shop.home.root), str(ro)]).returncode
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        else:
            ro.rmdir()
            ro = shop.home.root
            for p in [ro, *(q for q in ro.rglob("*") if "operator" not in q.parts)]:
                p.chmod(p.stat().st_mode & ~0o222)
        try:
            yield shop, ro, card
        finally:
            if mounted:
                subprocess.run(["umount", str(ro)], check=True)


def run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["--home", str(home), *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_every_reading_command_works_on_a_read_only_home(read_only_shop, tmp_path: Path, capsys) -> None:
    shop, ro, card = read_only_shop
    before = sorted((p.relative_to(ro), p.stat().st_mtime_ns) for p in ro.rglob("*") if "operator" not in p.parts)
    code, listed = run(capsys, ro, "ledger", "list", "--terminal", TID, "--kind", "payment")
    assert code == 0 and [e["amount_fen"] for e in listed["entries"]] == [100, 200]
    code, verified = run(capsys, ro, "ledger", "verify", "--terminal", TID)
    assert code == 0 and verified["ok"]
    code, _ = run(capsys, ro, "ledger", "export", "--terminal", TID, "--csv", str(tmp_path / "out.csv"))
    assert code == 0 and (tmp_path / "out.csv").read_text().count("payment") == 2
    assert run(capsys, ro, "card", "show", card)[0] == 0 and run(capsys, ro, "card", "list")[0] == 0
    code, report = run(capsys, ro, "report", "--terminal", TID, "--operator", shop.url)
    assert code == 1 and "error" not in report  # they differ only by the payment not uploaded yet
    assert [(d["terminal"], d["operator"], d["note"]) for d in report["differences"]] == [
        ("pending", "missing", "not uploaded yet: run pos sync")]
    assert report["terminal"]["count"] == 2 and report["operator"]["count"] == 1
    after = sorted((p.relative_to(ro), p.stat().st_mtime_ns) for p in ro.rglob("*") if "operator" not in p.parts)
    assert after == before  # nothing on the copy was written
