"""Snapshots of the main screens in both languages (pytest-textual-snapshot; update with --snapshot-update).

Everything shown is fixed: wallet ids, amounts, voucher ids and the countdown clock; status figures come from a
fresh ledger and a fake operator that is offline; no background sync runs (``sync_interval=0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecny_nfc.mock import MockReader
from pos.gate.ticket_gate import ANTI_PASSBACK, CAPACITY, PAID, Gate, GateDecision
from pos.home import Home
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason
from pos.runtime import Runtime
from pos.ui.clerk import ChargePanel, ClerkApp, CounterScreen, EntryPanel, ResultPanel
from pos.ui.gate import GateApp, GateResultScreen, GateScreen
from pos.ui.history import ReportScreen
from pos.ui.tester import TesterScreen
from tests.ui.conftest import COUNTER, FIXED_NOW, GATE, FakeServices, make_config, showing, until
from wallet.ids import luhn_digit
from wallet.issuance import issue_card

LANGS = ["zh-CN", "en"]
WALLET = "099100000000001" + luhn_digit("099100000000001")


def fixed_home(tmp_path: Path, replace: tuple[str, str] | None = None) -> Home:
    config = make_config(tmp_path)
    if replace is not None:
        text = config.read_text(encoding="utf-8")
        assert replace[0] in text
        config.write_text(text.replace(*replace), encoding="utf-8")
    home = Home(tmp_path / "home", config)
    caps = home.config.risk.caps
    for n, (tier, balance) in enumerate([(4, 100_000), (2, 2_000_000), (4, 500)], 1):
        body = f"0991000000{n:05d}"
        home.cards.add(issue_card(home.pki, f"c{n:04d}", tier, balance, caps, wallet_id=body + luhn_digit(body)))
    return home


def clerk(tmp_path: Path, lang: str, replace: tuple[str, str] | None = None) -> ClerkApp:
    home = fixed_home(tmp_path, replace)
    rt = Runtime(home, COUNTER, MockReader(), clock=lambda: FIXED_NOW, monotonic=lambda: 1000.0)
    return ClerkApp(rt, lang=lang, services=FakeServices(), status_interval=0)


def gate(tmp_path: Path, lang: str) -> GateApp:
    home = fixed_home(tmp_path)
    rt = Runtime(home, GATE, MockReader(), clock=lambda: FIXED_NOW, monotonic=lambda: 1000.0)
    return GateApp(rt, Gate(home, GATE), lang=lang, services=FakeServices(), hold_s=600, sync_interval=0)


def showing_screen(screen_type: type) -> Any:
    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: showing(pilot.app, screen_type))

    return run_before


def on_counter(act: Any, panel_type: type) -> Any:
    """On the counter once it is ready: ``act(screen)`` (open a charge, show a result), then wait for the panel."""

    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: showing(pilot.app, EntryPanel))
        act(pilot.app.screen)
        await until(pilot, lambda: showing(pilot.app, panel_type))

    return run_before


def pushing(make_screen: Any, screen_type: type) -> Any:
    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: showing(pilot.app, CounterScreen) or showing(pilot.app, GateScreen))
        pilot.app.push_screen(make_screen())
        await until(pilot, lambda: showing(pilot.app, screen_type))

    return run_before


@pytest.mark.parametrize("lang", LANGS)
def test_counter(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), press=["plus", "down", "plus", "plus"],
                        run_before=showing_screen(EntryPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_charge_waiting_for_tap(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), run_before=on_counter(lambda s: s.start_charge(1230), ChargePanel))


@pytest.mark.parametrize("lang", LANGS)
def test_approved(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    outcome = Outcome("approved", 1230, voucher_id=f"{WALLET}-00000001", wallet_id=WALLET, balance_after_fen=98_770)
    assert snap_compare(clerk(tmp_path, lang), run_before=on_counter(lambda s: s.show_result(outcome), ResultPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_declined(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    outcome = Outcome("declined", 1230, Reason.INSUFFICIENT_BALANCE, wallet_id=WALLET)
    assert snap_compare(clerk(tmp_path, lang), run_before=on_counter(lambda s: s.show_result(outcome), ResultPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_tester_panel(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), run_before=pushing(TesterScreen, TesterScreen))


@pytest.mark.parametrize("lang", LANGS)
def test_gate_ready(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(gate(tmp_path, lang), press=["down", "plus"], run_before=showing_screen(GateScreen))


@pytest.mark.parametrize("lang", LANGS)
def test_gate_open(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    d = GateDecision(True, PAID, 1, 2, wallet_id=WALLET, sku="adult", tickets=1, used=1, amount_fen=7000)
    assert snap_compare(gate(tmp_path, lang), run_before=pushing(lambda: GateResultScreen(d), GateResultScreen))


@pytest.mark.parametrize("lang", LANGS)
def test_gate_stop(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    d = GateDecision(False, ANTI_PASSBACK, 1, 2, wallet_id=WALLET, tickets=1, used=1, window_s=1800)
    assert snap_compare(gate(tmp_path, lang), run_before=pushing(lambda: GateResultScreen(d), GateResultScreen))


def sold_out(pilot: Any) -> Any:
    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: showing(pilot.app, GateScreen))
        pilot.app.counts = (3, 0)  # capacity 3, all sold
        pilot.app.screen.redraw()

    return run_before


@pytest.mark.parametrize("lang", LANGS)
def test_gate_sold_out(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(gate(tmp_path, lang), run_before=sold_out(None))


@pytest.mark.parametrize("lang", LANGS)
def test_gate_stop_one_place_left(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    d = GateDecision(False, CAPACITY, 2, 1, wallet_id=WALLET, tickets=2)
    assert snap_compare(gate(tmp_path, lang), run_before=pushing(lambda: GateResultScreen(d), GateResultScreen))


# -- receipts, help and guards (issue 12) ------------------------------------------------------------------------
LONG_NAME_EN = "Extra-long USB-C fast cable 2m"  # 30 characters
LONG_NAME_ZH = "超长型双头快充数据线两米装加厚版"  # 15 characters, 30 cells


def long_names_clerk(tmp_path: Path, lang: str) -> ClerkApp:
    assert len(LONG_NAME_EN) == 30
    return clerk(tmp_path, lang, ("{zh: 数据线, en: USB-C cable}", f"{{zh: {LONG_NAME_ZH}, en: {LONG_NAME_EN}}}"))


@pytest.mark.parametrize("lang", LANGS)
def test_counter_long_item_name(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(long_names_clerk(tmp_path, lang), press=["down"] * 5 + ["plus"],
                        run_before=showing_screen(EntryPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_counter_over_the_offline_cap(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), press=[*"99999999.99"], run_before=showing_screen(EntryPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_approved_large_amount(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    outcome = Outcome("approved", 9_999_999_999, voucher_id=f"{WALLET}-00000001", wallet_id=WALLET,
                      balance_after_fen=12_785, offline_left=4)
    assert snap_compare(clerk(tmp_path, lang), run_before=on_counter(lambda s: s.show_result(outcome), ResultPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_help(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), press=["f1"], run_before=showing_screen(EntryPanel))


@pytest.mark.parametrize("lang", LANGS)
def test_end_of_day(snap_compare: Any, tmp_path: Path, lang: str) -> None:
    assert snap_compare(clerk(tmp_path, lang), run_before=pushing(ReportScreen, ReportScreen))
