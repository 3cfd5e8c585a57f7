"""Scenario files: the shipped ones all pass (this is how CI runs them), failures and bad files are reported."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pos.cli.main import main
from pos.scenario import parse_scenario, run_scenario, shipped

SHIPPED = shipped()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_passes(path: Path) -> None:
    result = run_scenario(parse_scenario(path))
    assert result.ok, [(s.path, s.error, [(f.key, f.expected, f.actual) for f in s.failures]) for s in result.failed]


FAILING = """\
name: a wrong expectation
clock: 2026-03-01T09:00:00+08:00
operator: none
cards:
  alice: {tier: 4, balance: 100.00}
steps:
  - pay: {terminal: CMGQ0001, card: alice, amount: 12.30}
    expect: {status: approved, balance_after: 80.00}
  - advance: 90m
  - expect: {card: alice, balance: 87.70}
"""


def test_failed_expectation_exits_1_with_expected_and_actual(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(FAILING)
    junit = tmp_path / "j.xml"
    assert main(["scenario", "run", str(f), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "line 7: balance_after: expected 80.00, got 87.70" in out
    assert "03-01 10:30:00" in out  # the later step still ran, on the advanced clock
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "4"
    assert main(["scenario", "run", str(f), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["scenarios"][0]["results"][1]["failures"] == [
        {"key": "balance_after", "expected": 8000, "actual": 8770}]


@pytest.mark.parametrize("text, where", [
    (FAILING.replace("amount: 12.30", "amount: 12.345"), ":7: steps[0].pay.amount:"),
    (FAILING.replace("  - advance: 90m", "  - advance: soon"), ":9: steps[1].advance:"),
    (FAILING.replace("  - advance: 90m", "  - fly: 90m"), ":9: steps[1]: unknown key 'fly'"),
    (FAILING.replace("balance_after: 80.00", "colour: red"), ":8: steps[0].expect.colour:"),
    (FAILING.replace("tier: 4", "tier: 9"), ":5: cards.alice.tier:"),
    (FAILING + "  - repeat: {times: 2, steps: [{sync: {}}]}\n", ":11: steps[3].repeat.steps[0].sync.terminal:"),
])
def test_bad_file_exits_2_naming_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                              where: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert main(["scenario", "check", str(f)]) == 2
    assert f"{f}{where}" in capsys.readouterr().err
    assert main(["scenario", "run", str(f)]) == 2


def test_list_and_check_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["scenarios"]
    assert len(rows) == len(SHIPPED) >= 9 and all(r["description"] for r in rows)
    assert main(["scenario", "check", *map(str, SHIPPED)]) == 0
