"""A card drawn a wallet id the operator has on file already (forced here: the random draw is replaced) is issued
again under a fresh id, by every issuer: ``pos card issue`` (online and with the home's embedded operator), two
issuers racing, the scenario world and the fleet. The card in HOME is the one registered; both wallets pay and
settle. An issuer that keeps drawing taken ids gives up with a typed error and leaves no card file."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wallet.issuance
from pos.cards.manage import issue_cards
from pos.cli.main import main
from pos.composition import start_embedded_operator
from pos.fleet.books import back_office, register_all
from pos.fleet.plan import FleetOptions, wallet_id, write_config
from pos.home import Home
from pos.scenario import parse_scenario, run_scenario
from tests.support.shop import Shop, shop_session
from wallet.card import CardState
from wallet.errors import WalletIdsExhausted
from wallet.ids import check_wallet_id, new_wallet_id
from wallet.issuance import ISSUE_ATTEMPTS, issue_card

T1, T2 = "CMGQ0001", "CMGQ0002"
NOWHERE = "http://127.0.0.1:9"  # no operator there: the home's embedded one registers


class Draws:
    """The wallet ids issuing draws: ``forced`` ones first (thread-safe), then ``then`` (default: random)."""

    def __init__(self, forced: list[str], then: Callable[[], str] | None = None) -> None:
        self.forced, self.then = list(forced), then or new_wallet_id
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> str:
        with self.lock:
            self.count += 1
            return self.forced.pop(0) if self.forced else self.then()


def force(monkeypatch: pytest.MonkeyPatch, forced: list[str], then: Callable[[], str] | None = None) -> Draws:
    draws = Draws(forced, then)
    monkeypatch.setattr(wallet.issuance, "new_wallet_id", draws)
    return draws


def cli(capsys: pytest.CaptureFixture[str], home: Home, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["--home", str(home.root), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def cert_on_file(db: Path, wallet_id: str) -> bytes | None:
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT cert_der FROM wallets WHERE wallet_id = ?", (wallet_id,)).fetchone()
    return None if found is None else bytes(found[0])


def files(home: Home) -> list[str]:
    return sorted(p.name for p in home.cards.root.iterdir() if not p.name.startswith("."))


@pytest.fixture
def bank_shop(home: Home, tmp_path: Path) -> Iterator[Shop]:
    """An operator with a database of its own (not the home's embedded one), as a bank's is."""
    with shop_session(home, f"sqlite:///{tmp_path / 'bank.db'}") as s:
        s.provision(T1, T2)
        yield s


def pay_and_settle(shop: Shop, cards: dict[str, int]) -> None:
    """Each card pays its amount at T1; the sync settles every payment, each from its own wallet."""
    for card, amount in cards.items():
        shop.pay(T1, card, amount)
    res = shop.sync(T1)
    assert (res.settled, res.rejected) == (len(cards), [])
    with shop.admin() as adm:
        for card, amount in cards.items():
            w = adm.wallet(shop.home.cards.load(card).wallet_id)
            assert (w.spent_fen, w.status) == (amount, "active")


def test_pos_card_issue_draws_again_when_the_operator_has_the_id(
        bank_shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    home = bank_shop.home
    code, out = cli(capsys, home, "card", "issue", "--tier", "4", "--balance", "100")
    assert code == 0
    first = out["cards"][0]
    draws = force(monkeypatch, [first["wallet_id"]])
    code, out = cli(capsys, home, "card", "issue", "--tier", "4", "--balance", "50")
    assert code == 0 and draws.count == 2  # the operator refused the first draw (409 wallet_exists)
    second = out["cards"][0]
    assert second["card_id"] == "c0002" and second["wallet_id"] != first["wallet_id"]
    check_wallet_id(second["wallet_id"])
    assert files(home) == ["c0001.json", "c0002.json"]  # no file of the refused draw, no reservation left
    stored = home.cards.load("c0002")
    assert stored.wallet_id == second["wallet_id"] and stored.balance_fen == 5000
    assert cert_on_file(tmp_path / "bank.db", stored.wallet_id) == stored.cert_der  # the card the operator knows
    assert cert_on_file(tmp_path / "bank.db", first["wallet_id"]) == home.cards.load("c0001").cert_der
    assert not (home.root / "operator" / "operator.db").exists()  # nothing registered at the embedded operator
    pay_and_settle(bank_shop, {"c0001": 1200, "c0002": 300})


def test_the_embedded_operator_refuses_too_and_the_issue_draws_again(
        home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POS_OPERATOR_URL", NOWHERE)
    code, out = cli(capsys, home, "card", "issue", "--tier", "4", "--balance", "100", "--count", "2")
    assert code == 0
    taken = out["cards"][1]["wallet_id"]
    draws = force(monkeypatch, [taken])
    code, out = cli(capsys, home, "card", "issue", "--tier", "4", "--balance", "50")
    assert code == 0 and draws.count == 2 and out["cards"][0]["wallet_id"] != taken
    db = home.root / "operator" / "operator.db"
    assert [cert_on_file(db, home.cards.load(c).wallet_id) for c in ("c0002", "c0003")] == [
        home.cards.load(c).cert_der for c in ("c0002", "c0003")]
    with shop_session(home) as shop:  # the embedded operator served: the three cards pay and settle
        shop.provision(T1)
        pay_and_settle(shop, {"c0001": 100, "c0002": 200, "c0003": 300})


def test_an_issuer_that_keeps_drawing_taken_ids_gives_up_with_a_typed_error(
        bank_shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    home = bank_shop.home
    (a,) = bank_shop.cards(1)
    taken = home.cards.load(a).wallet_id
    draws = force(monkeypatch, [], then=lambda: taken)
    code, out = cli(capsys, home, "card", "issue", "--tier", "4", "--balance", "50")
    assert code == 1 and out["code"] == "wallet_ids_exhausted"
    assert out["error"] == (f"the wallet ids drawn for a card were on file at the operator already {ISSUE_ATTEMPTS} "
                            f"times in a row (last {taken})")
    assert draws.count == ISSUE_ATTEMPTS
    assert files(home) == ["c0001.json"]  # nothing of the failed issue
    with pytest.raises(WalletIdsExhausted):  # a batch: its second card collides with its first, then the operator
        issue_cards(home, 4, 100, 3, operator_url=bank_shop.url)
    assert files(home) == ["c0001.json"]  # the batch left nothing
    assert cert_on_file(tmp_path / "bank.db", taken) == home.cards.load(a).cert_der


def test_two_issuers_racing_for_one_id_end_with_two_wallets(bank_shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    same = new_wallet_id()
    force(monkeypatch, [same, same])
    issued: list[CardState] = []
    start = threading.Barrier(2)

    def issuer() -> None:
        start.wait(timeout=30)
        issued.extend(issue_cards(bank_shop.home, 4, 10_000, operator_url=bank_shop.url))

    threads = [threading.Thread(target=issuer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(s.card_id for s in issued) == ["c0001", "c0002"]
    ids = {s.wallet_id for s in issued}
    assert len(ids) == 2 and same in ids  # one issuer won the id, the other drew again
    assert [bank_shop.home.cards.load(s.card_id) for s in issued] == issued
    pay_and_settle(bank_shop, {"c0001": 700, "c0002": 800})


SCENARIO = """name: two cards, one id drawn
clock: 2026-03-01T09:00:00+08:00
operator: embedded
cards:
  alice: {tier: 4, balance: 100.00}
  bob: {tier: 4, balance: 50.00}
steps:
  - pay: {terminal: CMGQ0001, card: alice, amount: 12.00}
    expect: {status: approved}
  - pay: {terminal: CMGQ0001, card: bob, amount: 3.00}
    expect: {status: approved}
  - sync: {terminal: CMGQ0001}
    expect: {settled: 2, rejected: 0}
"""


def test_a_scenario_draws_again_and_both_cards_pay_and_settle(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    same = new_wallet_id()
    draws = force(monkeypatch, [same, same])
    (tmp_path / "s.yaml").write_text(SCENARIO, encoding="utf-8")
    r = run_scenario(parse_scenario(tmp_path / "s.yaml"), tmp_path / "home")
    assert [(s.error, s.failures) for s in r.steps] == [(None, [])] * 4 and draws.count == 3
    home = Home(tmp_path / "home")
    assert home.cards.load("c0001").wallet_id == same and home.cards.load("c0002").wallet_id != same


def test_a_scenario_that_keeps_drawing_taken_ids_leaves_no_card_of_the_batch(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    same = new_wallet_id()
    force(monkeypatch, [], then=lambda: same)
    (tmp_path / "s.yaml").write_text(SCENARIO, encoding="utf-8")
    r = run_scenario(parse_scenario(tmp_path / "s.yaml"), tmp_path / "home")
    assert (r.steps[0].error or "").startswith("WalletIdsExhausted: the wallet ids drawn for a card were on file")
    assert Home(tmp_path / "home").cards.ids() == ["c0001"]  # alice, registered; nothing of bob's batch


BASE = 12_345_678_900  # the fleet run's first wallet id, fixed


def test_a_fleet_whose_ids_are_on_file_issues_those_cards_again(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator database an earlier run used: every id of this run's consecutive range is on file already."""
    fleet = Home(tmp_path / "fleet")
    opts = FleetOptions(terminals=3, wallets=10, taps=100, clones=0.2, seed=11, shards=1)
    write_config(opts, fleet.root / "merchants.yaml", "http://127.0.0.1:8700")
    op = start_embedded_operator(fleet)
    try:
        earlier = [issue_card(fleet.pki, f"c{w + 1:04d}", 1, 100, wallet_id=wallet_id(BASE, w)) for w in range(10)]
        op.operator.register_wallets([(s.wallet_id, 1, s.cert_der, 100) for s in earlier])
        monkeypatch.setattr("pos.fleet.run.secrets.randbelow", lambda _n: BASE)
        draws = force(monkeypatch, [])
        code = main(["--home", str(fleet.root), "--json", "fleet", "run", "--terminals", "3", "--wallets", "10",
                     "--taps", "100", "--clones", "0.2", "--seed", "11", "--shards", "1", "--operator", op.url])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["reports_match"] and out["balance_errors"] == 0, out
        assert out["approved"] > 50 and out["settled"] > 0 and out["clones"] == out["clones_spent"] >= 1
        assert draws.count == 10  # every wallet of the run (one shard, in this process) drawn again, once
        for s in earlier:  # the earlier wallets are as they were
            w = op.operator.wallet(s.wallet_id)
            assert (w.spent_fen, w.loaded_fen, w.status) == (0, 100, "active")
    finally:
        op.stop()


def test_fleet_registration_in_process_issues_taken_ids_again(home: Home) -> None:
    pki = home.pki
    states = [issue_card(pki, f"c{w + 1:08d}", 1, 1000, wallet_id=wallet_id(BASE, w)) for w in range(5)]
    other = issue_card(pki, "c00000099", 1, 1000, wallet_id=states[2].wallet_id)
    got: list[CardState] = []
    with back_office(home, "", True, None) as office:
        office.register([(other.wallet_id, 1, other.cert_der, 1000)])
        done = register_all(office, iter(states), lambda s: issue_card(pki, s.card_id, 1, 1000), got.append)
        assert done == 5 and [s.card_id for s in got] == [s.card_id for s in states]
        assert [s.wallet_id == t.wallet_id for s, t in zip(got, states, strict=True)] == [True, True, False, True, True]
        assert office.spent([s.wallet_id for s in got]) == {s.wallet_id: 0 for s in got}
