"""The scenario runner, one step kind and one expectation kind at a time: each a tiny scenario run in-process.

Every expectation is checked both ways: the true value passes, a wrong one fails naming expected and actual.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pos.cli.main import main
from pos.scenario import ScenarioResult, StepResult, parse_scenario, run_scenario
from wallet.clock import CHINA_TZ, from_ms

CLOCK = "2026-03-01T09:00:00+08:00"


def run(tmp_path: Path, steps: str, *, operator: str = "none", cards: str = "alice: {tier: 4, balance: 100.00}",
        clock: str = CLOCK, on_step: Any = None) -> ScenarioResult:
    """Run a scenario of ``steps`` (YAML list items, indented by two) with card ``alice``."""
    text = (f"name: t\nclock: {clock}\noperator: {operator}\ncards:\n" +
            "".join(f"  {line}\n" for line in cards.splitlines()) + "steps:\n" + steps)
    f = tmp_path / "s.yaml"
    f.write_text(text, encoding="utf-8")
    return run_scenario(parse_scenario(f), tmp_path / "home", on_step)


def step(result: ScenarioResult, path: str) -> StepResult:
    return next(s for s in result.steps if s.path == path)


def failed(result: ScenarioResult) -> dict[str, list[tuple[str, Any, Any]]]:
    """Each failed step: its expected-against-actual triples (an error as ``("error", None, message)``)."""
    return {s.path: [(f.key, f.expected, f.actual) for f in s.failures] or [("error", None, s.error)]
            for s in result.failed}


PAY = "  - pay: {terminal: CMGQ0001, card: alice, amount: 12.30}\n"


def test_pay_status_balance_after_and_reason(tmp_path: Path) -> None:
    r = run(tmp_path, PAY + "    expect: {status: approved, balance_after: 87.70, amount: 12.30}\n"
            "  - pay: {terminal: CMGQ0001, card: alice, amount: 90.00}\n"
            "    expect: {status: declined, reason: insufficient_balance}\n"
            "  - pay: {terminal: CMGQ0001, card: alice, amount: 1.00}\n"
            "    expect: {status: declined, reason: card_removed, balance_after: 1.00}\n")
    assert failed(r) == {"steps[2]": [("status", "declined", "approved"), ("reason", "card_removed", None),
                                      ("balance_after", 100, 8670)]}


def test_pay_torn_tap_retapped_and_recovered_at_the_next_tap(tmp_path: Path) -> None:
    r = run(tmp_path, "  - pay: {terminal: CMGQ0001, card: alice, amount: 5, tear_after: pay, retap: true}\n"
            "    expect: {status: approved, torn: true, balance_after: 95.00}\n"
            "  - pay: {terminal: CMGQ0001, card: alice, amount: 5, tear_after: pay}\n"
            "    expect: {status: declined, reason: card_removed, pending_recovery: true}\n"
            "  - pay: {terminal: CMGQ0001, card: alice, amount: 5}\n"
            "    expect: {status: approved, recovered: 0}\n")
    assert failed(r) == {"steps[2]": [("recovered", 0, 1)]}


def test_kill_then_the_next_tap_recovers(tmp_path: Path) -> None:
    r = run(tmp_path, "  - kill: {terminal: CMGQ0001}\n" + PAY + "    expect: {status: killed}\n"
            "  - expect: {card: alice, balance: 87.70}\n"
            "  - pay: {terminal: CMGQ0001, card: alice, amount: 1.00}\n"
            "    expect: {status: approved, recovered: 1, balance_after: 86.70}\n" + PAY +
            "    expect: {status: killed}\n")
    assert failed(r) == {"steps[4]": [("status", "killed", "approved")]}  # a kill is for one tap
    assert step(r, "steps[0]").actual == {"armed": "CMGQ0001"}


def test_card_expectations_balance_counter_and_day_spent(tmp_path: Path) -> None:
    r = run(tmp_path, PAY + "  - expect: {card: alice, balance: 87.70, counter: 1, day_spent: 12.30, status: active}\n"
            "  - expect: {card: alice, balance: 100.00, counter: 2}\n")
    assert failed(r) == {"steps[2]": [("balance", 10_000, 8770), ("counter", 2, 1)]}


def test_issue_mid_scenario_and_repeat_fills_in_i(tmp_path: Path) -> None:
    r = run(tmp_path, '  - issue: {"v${i}": {tier: 4, balance: 10, count: 3}, bob: {tier: 2, balance: 50}}\n'
            "  - repeat:\n      times: 3\n      steps:\n"
            '        - pay: {terminal: CMGQ0001, card: "v${i}", amount: "${i}.00"}\n'
            "          expect: {status: approved}\n"
            "  - expect: {card: v1, balance: 9.00}\n  - expect: {card: v3, balance: 7.00}\n"
            "  - expect: {card: bob, balance: 50.00}\n  - expect: {card: v2, balance: 10.00}\n")
    assert step(r, "steps[0]").actual == {"issued": 4, "cards": ["v1", "v2", "v3", "bob"]}
    assert [s.path for s in r.steps if s.kind == "pay"] == [f"steps[1]#{i}.steps[0]" for i in (1, 2, 3)]
    assert [s.actual["amount"] for s in r.steps if s.kind == "pay"] == [100, 200, 300]
    assert failed(r) == {"steps[5]": [("balance", 1000, 800)]}


def test_advance_and_until_move_the_virtual_clock(tmp_path: Path) -> None:
    r = run(tmp_path, "  - advance: 1h30m\n" + PAY + "  - until: 2026-03-02T00:05:00+08:00\n" + PAY +
            "  - expect: {card: alice, day_spent: 12.30}\n")
    at = [from_ms(s.clock_ms).astimezone(CHINA_TZ).strftime("%m-%d %H:%M") for s in r.steps]
    assert at == ["03-01 09:00", "03-01 09:00", "03-01 10:30", "03-01 10:30", "03-02 00:05", "03-02 00:05"]
    assert r.ok, failed(r)  # the day's spending started again after midnight


def test_load_adds_to_the_balance(tmp_path: Path) -> None:
    r = run(tmp_path, "  - load: {card: alice, amount: 50}\n    expect: {status: loaded, balance: 50.00}\n"
            "  - load: {card: alice, amount: 20}\n    expect: {balance: 50.00}\n"
            "  - expect: {card: alice, balance: 70.00}\n", cards="alice: {tier: 4}")
    assert failed(r) == {"steps[1]": [("balance", 5000, 7000)]}


def test_gate_admits_and_stops_passback(tmp_path: Path) -> None:
    r = run(tmp_path, "  - gate: {terminal: HQGT0001, card: alice, quantity: 2}\n"
            "    expect: {status: approved, open: true, code: paid, tickets: 2, used: 1}\n"
            "  - gate: {terminal: HQGT0001, card: alice, quantity: 2}\n"
            "    expect: {open: true, code: prepaid, used: 2, amount: 0}\n"
            "  - gate: {terminal: HQGT0001, card: alice}\n    expect: {open: true}\n",
            cards="alice: {tier: 4, balance: 500.00}")
    assert failed(r) == {"steps[2]": [("open", True, False)]}
    assert step(r, "steps[2]").actual["code"] == "anti_passback"


def test_sync_pending_operator_down_and_up(tmp_path: Path) -> None:
    r = run(tmp_path, PAY + PAY + "  - operator: down\n"
            "  - sync: {terminal: CMGQ0001}\n    expect: {status: unavailable, pending: 2, pending_amount: 24.60}\n"
            "  - operator: up\n"
            "  - sync: {terminal: CMGQ0001}\n    expect: {status: ok, settled: 2, pending: 0}\n"
            "  - sync: {terminal: CMGQ0001}\n    expect: {status: ok, settled: 1, pending: 1}\n", operator="embedded")
    assert failed(r) == {"steps[6]": [("settled", 1, 0), ("pending", 1, 0)]}


def test_operator_down_after_n_requests_cuts_a_sync_in_the_middle(tmp_path: Path) -> None:
    r = run(tmp_path, PAY * 4 + "  - operator: {down_after: 1}\n"
            "  - sync: {terminal: CMGQ0001, batch_size: 2}\n    expect: {status: unavailable}\n"
            "  - operator: up\n  - sync: {terminal: CMGQ0001}\n    expect: {status: ok, pending: 0}\n",
            operator="embedded")
    assert r.ok, failed(r)
    assert 0 < step(r, "steps[5]").actual["pending"] < 4  # what the operator answered before it went down is kept


def test_refund_last_or_saved_refused_over_and_unavailable_while_down(tmp_path: Path) -> None:
    r = run(tmp_path, "  - pay: {terminal: CMGQ0001, card: alice, amount: 10, save_as: first}\n" + PAY +
            "  - operator: down\n  - refund: {terminal: CMGQ0001}\n    expect: {status: unavailable}\n"
            "  - operator: up\n"
            "  - refund: {terminal: CMGQ0001, voucher: first, amount: 20}\n    expect: {status: refused}\n"
            "  - refund: {terminal: CMGQ0001, voucher: first, amount: 4}\n"
            "    expect: {status: refunded, amount: 4.00, left: 6.00}\n"
            "  - refund: {terminal: CMGQ0001}\n    expect: {status: refunded, amount: 12.30, left: 1.00}\n",
            operator="embedded")
    assert failed(r) == {"steps[7]": [("left", 100, 0)]}
    assert step(r, "steps[5]").actual["reason"] == "over_refund"


def _tamper(home: Path) -> None:
    conn = sqlite3.connect(home / "terminals" / "CMGQ0001" / "ledger.db")
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET amount_fen = 1 WHERE kind = 'payment'")
    conn.commit()
    conn.close()


def test_ledger_verify_passes_then_finds_the_tampering(tmp_path: Path) -> None:
    def tamper_after_first_check(res: StepResult) -> None:
        if res.path == "steps[1]":
            _tamper(tmp_path / "home")

    r = run(tmp_path, PAY + "  - expect: {ledger_verify: CMGQ0001}\n  - expect: {ledger_verify: CMGQ0001}\n",
            on_step=tamper_after_first_check)
    assert list(failed(r)) == ["steps[2]"]
    assert step(r, "steps[2]").failures[0].actual.startswith("tampered: ")


def test_report_matches_once_synced(tmp_path: Path) -> None:
    r = run(tmp_path, PAY + "  - expect: {report_matches: CMGQ0001}\n  - sync: {terminal: CMGQ0001}\n"
            "  - expect: {report_matches: CMGQ0001}\n", operator="embedded")
    assert list(failed(r)) == ["steps[1]"]  # a voucher still in the outbox is a difference
    assert str(step(r, "steps[1]").failures[0].actual).startswith("differences: ")


def test_denylisted_and_not_denylisted(tmp_path: Path) -> None:
    r = run(tmp_path, PAY + "  - pay: {terminal: ZZYS0001, card: eve, amount: 12.30}\n"
            "  - sync: {terminal: CMGQ0001}\n  - expect: {not_denylisted: alice}\n"
            "  - sync: {terminal: ZZYS0001}\n  - sync: {terminal: CMGQ0002}\n"
            "  - expect: {denylisted: eve, terminal: CMGQ0002}\n  - expect: {denylisted: alice, terminal: CMGQ0002}\n"
            "  - expect: {not_denylisted: eve, terminal: CMGQ0002}\n",
            operator="embedded", cards="alice: {tier: 4, balance: 100.00}\neve: {clone_of: alice}")
    assert failed(r) == {"steps[8]": [("not_denylisted", "eve", "on the denylist")]}


def test_the_scenario_clock_reaches_the_embedded_operator(tmp_path: Path) -> None:
    """A payment late on a virtual day settles on that day at the operator (its clock is the scenario's), not on the
    real day the test runs."""
    r = run(tmp_path, PAY + "  - advance: 20m\n  - sync: {terminal: CMGQ0001}\n    expect: {settled: 1}\n"
            "  - expect: {report_matches: CMGQ0001, date: 2026-03-01}\n", operator="embedded",
            clock="2026-03-01T23:50:00+08:00")
    assert r.ok, failed(r)
    with sqlite3.connect(tmp_path / "home" / "operator" / "operator.db") as db:
        settled = [row[0] for row in db.execute("SELECT settled_ms FROM vouchers")]
    assert [from_ms(ms).astimezone(CHINA_TZ).strftime("%m-%d %H:%M") for ms in settled] == ["03-02 00:10"]


def test_now_on_the_command_line_is_the_start_of_a_scenario_without_a_clock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("name: t\ncards: {alice: {tier: 4, balance: 10}}\nsteps:\n" + PAY.replace("12.30", "1") +
                 "  - sync: {terminal: CMGQ0001}\n  - expect: {report_matches: CMGQ0001, date: 2026-03-01}\n")
    assert main(["--now", "2026-03-01T23:55", "scenario", "run", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["scenarios"][0]
    assert data["ok"] and data["results"][0]["clock"].startswith("2026-03-01T23:55:00")
