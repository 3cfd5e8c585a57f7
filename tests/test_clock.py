"""The virtual clock: one time source for card, terminal, ledger, certificates and operator; ``pos --now``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pos.cli.main import main
from pos.ledger.chain import utc_now
from wallet import clock
from wallet.clock import VirtualClock, parse_instant


def test_virtual_clock_is_the_process_time_and_is_restored() -> None:
    vc = VirtualClock.at("2026-03-02T00:05")
    assert vc.now_ms() == parse_instant("2026-03-01T16:05:00Z")
    before = clock.current()
    with clock.use(vc):
        assert clock.now_ms() == vc.ms
        vc.advance(90 * 60_000)
        assert clock.now().isoformat() == "2026-03-01T17:35:00+00:00"
    assert clock.current() is before


def test_ledger_time_follows_jumps_both_ways() -> None:
    vc = VirtualClock(parse_instant("2026-03-01T12:00:00.250Z"))
    with clock.use(vc):
        assert utc_now() == "2026-03-01T12:00:00.250Z"
        vc.advance(-86_400_000)
        assert utc_now() == "2026-02-28T12:00:00.250Z"
        vc.advance(86_400_000 + 1_000)
        assert utc_now() == "2026-03-01T12:00:01.250Z"


def test_bad_time_is_refused() -> None:
    with pytest.raises(clock.InvalidInput):
        parse_instant("tomorrow")


def _pos(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_now_moves_daily_limits_and_certificate_validity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day1 = "2026-03-01T23:00"
    assert _pos(tmp_path, "--now", day1, "card", "issue", "--tier", "4", "--balance", "5000") == 0
    for _ in range(10):  # tier 4: 5000 yuan a day; offline 500 a payment
        assert _pos(tmp_path, "--now", day1, "pay", "--terminal", "CMGQ0001", "--card", "c0001",
                    "--amount", "500") == 0
    capsys.readouterr()
    assert _pos(tmp_path, "--now", day1, "--json", "card", "load", "c0001", "--amount", "1") == 0
    capsys.readouterr()
    assert _pos(tmp_path, "--now", day1, "--json", "pay", "--terminal", "CMGQ0001", "--card", "c0001",
                "--amount", "1") == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "over_daily_limit"
    assert _pos(tmp_path, "--now", "2026-03-02T00:05", "pay", "--terminal", "CMGQ0001", "--card", "c0001",
                "--amount", "1") == 0
    capsys.readouterr()
    # five years and a day later the wallet certificate has expired
    assert _pos(tmp_path, "--now", "2031-03-02T00:05", "--json", "pay", "--terminal", "CMGQ0001",
                "--card", "c0001", "--amount", "1") == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "expired_certificate"


def test_bad_now_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pos(tmp_path, "--now", "yesterday-ish", "card", "list") == 2
    assert "--now" in capsys.readouterr().err
    monkeypatch.setenv("POS_NOW", "nope")
    assert _pos(tmp_path, "card", "list") == 2
    assert "POS_NOW" in capsys.readouterr().err
    assert not (tmp_path / "cards").exists()
