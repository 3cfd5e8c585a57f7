"""The fleet simulator (``pos fleet run``): a small fleet's books balance through every real path, and a voucher
lost from an outbox before the sync makes the run fail."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pos.cli.main import main
from pos.composition import start_embedded_operator
from pos.fleet.plan import FleetOptions, taps, wallet_id, write_config
from pos.fleet.run import FleetRun, balanced, run_fleet
from pos.home import Home
from wallet.ids import check_wallet_id

KEYS = {"terminals", "wallets", "taps", "approved", "declined", "settled", "duplicates", "double_spends", "clones",
        "lost", "doubled", "reports_match", "seconds", "taps_per_s", "settled_per_s"}


@pytest.fixture
def operator_of(tmp_path: Path) -> Iterator[Callable[[FleetOptions], str]]:
    """An operator serving a fleet's home in this process (a child process costs seconds of start-up per test)."""
    started = []

    def start(opts: FleetOptions) -> str:
        write_config(opts, tmp_path / "fleet" / "merchants.yaml", "http://127.0.0.1:8700")
        started.append(start_embedded_operator(Home(tmp_path / "fleet")))
        return started[-1].url

    yield start
    for op in started:
        op.stop()


def test_a_small_fleet_balances_its_books(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          operator_of: Callable[[FleetOptions], str]) -> None:
    url = operator_of(FleetOptions(terminals=4, gates=1))
    code = main(["--home", str(tmp_path / "fleet"), "--json", "fleet", "run", "--terminals", "4", "--gates", "1",
                 "--wallets", "20", "--taps", "200", "--clones", "0.1", "--tears", "0.05", "--outages", "0.25",
                 "--seed", "7", "--operator", url])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out.keys() >= KEYS
    assert (out["terminals"], out["wallets"], out["taps"]) == (4, 20, 200)
    assert out["approved"] + out["declined"] == 200 and out["approved"] > 150
    assert out["torn"] > 0 and out["outages"] == 1
    assert out["clones_spent"] >= 1 and out["clones"] == out["clones_spent"] and out["double_spends"] >= 2
    assert out["lost"] == 0 and out["doubled"] == 0 and out["reports_match"] and out["balance_errors"] == 0
    assert out["settled"] + out["double_spends"] <= out["approved"]


def _lose_one_voucher(home: Home, terminal_ids: list[str]) -> None:
    """A terminal's disk loses its last payment before the sync (behind the ledger's back)."""
    db = home.terminal_dir(terminal_ids[0]) / "ledger.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER entries_no_delete")
        conn.execute("DELETE FROM entries WHERE seq = (SELECT max(seq) FROM entries WHERE kind = 'payment')")


def test_a_lost_voucher_fails_the_run(tmp_path: Path, operator_of: Callable[[FleetOptions], str]) -> None:
    opts = FleetOptions(terminals=2, wallets=4, taps=16, seed=3, shards=1)
    url = operator_of(opts)
    result = run_fleet(FleetRun(tmp_path / "fleet", opts, url, before_sync=_lose_one_voucher, progress=False,
                                local_back_office=True))  # the in-process operator keeps its books in the home
    # the terminal's ledger now fails verification, so it uploads nothing: every voucher it took is missing at the
    # operator, its report does not match, and the card the payment was deleted for does not balance
    assert result["lost"] >= 1 and result["balance_errors"] >= 1 and result["reports_matching"] == 1
    assert not balanced(result)


def test_the_cli_exits_1_when_the_books_do_not_balance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pos.fleet.run as run_module

    monkeypatch.setattr(run_module, "run_fleet", lambda run: {
        "terminals": 1, "wallets": 1, "taps": 1, "approved": 1, "declined": 0, "torn": 0, "settled": 0,
        "duplicates": 0, "double_spends": 0, "clones": 0, "clones_spent": 0, "lost": 1, "doubled": 0,
        "reports_match": True, "reports_matching": 1, "balance_errors": 0, "seconds": 1.0, "taps_per_s": 1.0,
        "settled_per_s": 0.0})
    assert main(["--home", str(tmp_path), "fleet", "run", "--quiet"]) == 1


def test_bad_options_exit_2_and_write_nothing(tmp_path: Path) -> None:
    assert main(["--home", str(tmp_path / "h"), "fleet", "run", "--gates", "9", "--terminals", "2"]) == 2
    assert not (tmp_path / "h" / "cards").exists()


def test_taps_stream_from_the_seed_and_clones_alternate() -> None:
    opts = FleetOptions(terminals=3, wallets=5, taps=50, clones=0.2, days=2, seed=5)
    first, again = list(taps(opts)), list(taps(opts))
    assert first == again and {t.day for t in first} == {0, 1}
    mine = [t for t in first if t.wallet == 0]
    assert [t.use_clone for t in mine] == [i % 2 == 1 for i in range(len(mine))]
    assert not any(t.use_clone for t in first if t.wallet != 0)


def test_a_runs_wallet_ids_are_distinct_and_well_formed() -> None:
    """Consecutive from the run's random start (random ids collide: 100,000 in 10^11, once in twenty runs)."""
    for base in (0, 10**11 - 3):
        ids = [wallet_id(base, w) for w in range(1000)]
        assert len(set(ids)) == 1000 and all(check_wallet_id(i) == i for i in ids)
