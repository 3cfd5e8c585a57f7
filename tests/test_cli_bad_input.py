"""Bad input never crashes and never writes: every case exits 2 with one error line on stderr, a JSON error object
``{"error", "code"}`` on stdout with ``--json``, and leaves the file tree (names, sizes, mtimes) as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pos.cards.manage import issue_cards
from pos.cli.main import main
from pos.home import Home

SHIPPED = (Path(__file__).resolve().parent.parent / "merchants.yaml").read_text(encoding="utf-8")
BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else '1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
               for p, a in zip(["", *"abcdefgh"], "abcdefghi", strict=False))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A used home: one card, one payment at CMGQ0001 (so its ledger exists)."""
    home = tmp_path_factory.mktemp("base") / "home"
    issue_cards(Home(home), 4, 10_000, register=False)  # no operator needed: quick
    assert main(["--home", str(home), "pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1"]) == 0
    return home


def config(text: str) -> Callable[[Path], None]:
    return lambda home: (home / "merchants.yaml").write_text(text, encoding="utf-8")


def card_field(name: str, value: object) -> Callable[[Path], None]:
    def setup(home: Path) -> None:
        path = home / "cards" / "c0001.json"
        data = json.loads(path.read_text())
        data[name] = value
        path.write_text(json.dumps(data))
    return setup


def unwritable(home: Path) -> None:
    (home.parent / "locked").mkdir()
    os.chmod(home.parent / "locked", 0o555)


PAY = ["pay", "--terminal", "CMGQ0001", "--card", "c0001", "--amount", "1"]
EXPORT = ["ledger", "export", "--terminal", "CMGQ0001", "--csv"]
# (id, setup of the copied home or None, argv with {home} and {tmp})
CASES: list[tuple[str, Callable[[Path], None] | None, list[str]]] = [
    ("refund-negative", None, ["refund", "--terminal", "CMGQ0001", "--voucher", "v", "--amount", "-1"]),
    ("refund-exponent", None, ["refund", "--terminal", "CMGQ0001", "--voucher", "v", "--amount", "1e3"]),
    ("pay-slow-negative", None, [*PAY, "--slow", "-1"]),
    ("pay-slow-nan", None, [*PAY, "--slow", "nan"]),
    ("pay-timeout-negative", None, [*PAY, "--timeout", "-1"]),
    ("pay-timeout-nan", None, [*PAY, "--timeout", "nan"]),
    ("pay-corrupt-huge", None, [*PAY, "--corrupt", "99999"]),
    ("pay-tear-huge", None, [*PAY, "--tear-after", "99999"]),
    ("pay-reader-bogus", None, ["pay", "--terminal", "CMGQ0001", "--amount", "1", "--reader", "bogus:x"]),
    ("run-reader-bogus", None, ["run", "--reader", "bogus"]),
    ("export-missing-folder", None, [*EXPORT, "{tmp}/nowhere/out.csv"]),
    ("export-to-folder", None, [*EXPORT, "{tmp}"]),
    ("yaml-nan", config(SHIPPED.replace("fee_bps: 0", "fee_bps: .nan")), ["merchants"]),
    ("yaml-inf", config(SHIPPED.replace("offline_single_max: 500.00", "offline_single_max: .inf")), ["merchants"]),
    ("yaml-sexagesimal", config(SHIPPED.replace("offline_count_max: 10", "offline_count_max: 1:30")),
     ["merchants"]),
    ("yaml-impossible-date", config(SHIPPED + "\nopened: 2026-02-30\n"), ["merchants"]),
    ("yaml-complex-key", config(SHIPPED + "\n? [a, b]\n: 1\n"), ["merchants"]),
    ("yaml-not-utf8", lambda home: (home / "merchants.yaml").write_bytes(b"operator: \xff\xfe\n"), ["merchants"]),
    ("yaml-deep", config("[" * 20_000 + "]" * 20_000), ["merchants"]),
    ("yaml-alias-bomb", config(BOMB), ["merchants"]),
    ("home-is-a-file", lambda home: (home.parent / "file").write_text("x"),
     ["--home", "{tmp}/file", "card", "issue", "--tier", "4", "--balance", "1"]),
    ("home-under-proc", None, ["--home", "/proc/ecny-pos-home", "card", "issue", "--tier", "4", "--balance", "1"]),
    ("home-unwritable", unwritable, ["--home", "{tmp}/locked/home", "card", "issue", "--tier", "4", "--balance", "1"]),
    ("card-balance-a-string", card_field("balance_fen", "lots"), ["card", "show", "c0001"]),
    ("card-balance-a-string-pay", card_field("balance_fen", "lots"), PAY),
    ("card-not-json", lambda home: (home / "cards" / "c0001.json").write_bytes(b"\xff{"), ["card", "list"]),
    ("pki-garbage", lambda home: (home / "pki" / "root.pem").write_text("garbage"), PAY),
    ("serve-db-garbage", None, ["operator", "serve", "--db", "garbage://x"]),
    ("serve-host-bad", None, ["operator", "serve", "--host", "999.999.1.1"]),
    ("card-id-dotdot", None, ["card", "show", "../x"]),
    ("clone-id-dotdot", None, ["card", "clone", "../../x"]),
    ("clone-unknown", None, ["card", "clone", "c0099"]),
    ("load-unknown", None, ["card", "load", "c0099", "--amount", "1"]),
    ("issue-over-tier-cap", None, ["card", "issue", "--tier", "4", "--balance", "100000"]),
    ("verify-unused-terminal", None, ["ledger", "verify", "--terminal", "CMGQ0002"]),
    ("list-unused-terminal", None, ["ledger", "list", "--terminal", "CMGQ0002"]),
    ("unknown-terminal", None, ["ledger", "verify", "--terminal", "NOPE0001"]),
    ("usage-bad-choice", None, ["card", "issue", "--tier", "9", "--balance", "1"]),
    ("usage-missing-option", None, ["pay", "--terminal", "CMGQ0001"]),
    ("usage-unknown-command", None, ["frobnicate"]),
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture
def no_permission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Where permission bits do not bind (root), make writes under ``tmp/locked`` fail as they would for a user."""
    if os.geteuid() != 0:
        yield
        return
    locked = str(tmp_path / "locked")
    real_mkdir, real_open = os.mkdir, os.open

    def deny(path: object) -> None:
        if os.fspath(path).startswith(locked + "/"):  # type: ignore[call-overload]
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))  # type: ignore[call-overload]

    def mkdir(path: object, *args: object, **kwargs: object) -> None:
        deny(path)
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    def open_(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            deny(path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    yield


@pytest.mark.parametrize(("setup", "argv"), [pytest.param(s, a, id=i) for i, s, a in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest,
        setup: Callable[[Path], None] | None, argv: list[str]) -> None:
    home = tmp_path / "home"
    shutil.copytree(base, home)
    if setup is not None:
        setup(home)
    if "locked" in " ".join(argv):
        request.getfixturevalue("no_permission")
    argv = [a.format(home=home, tmp=tmp_path) for a in argv]
    if argv[0] != "--home":
        argv = ["--home", str(home), *argv]
    before = tree(tmp_path)
    capsys.readouterr()

    code = main([*argv, "--json"])

    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pos: error: "), err
    data = json.loads(out)
    assert set(data) == {"error", "code"} and data["error"] == lines[0].removeprefix("pos: error: ")
    assert data["code"] and data["error"]
    assert tree(tmp_path) == before


def test_a_closed_pipe_ends_the_listing_quietly(base: Path, tmp_path: Path) -> None:
    """``pos card list | head -1``: no traceback, no "Exception ignored", the status of a tool killed by SIGPIPE."""
    home = tmp_path / "home"
    shutil.copytree(base, home)
    card = json.loads((home / "cards" / "c0001.json").read_text())
    for n in range(2, 150):  # enough JSON to overflow a pipe's buffer
        (home / "cards" / f"c{n:04d}.json").write_text(json.dumps({**card, "card_id": f"c{n:04d}"}))
    proc = subprocess.Popen([sys.executable, "-m", "pos.cli.main", "--home", str(home), "card", "list", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""
