"""Two cards drawn the same wallet id (forced here: the random draw is replaced by the first card's id)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import wallet.issuance
from pos.home import Home
from tests.support.shop import Shop, shop_session

T1, T2 = "CMGQ0001", "CMGQ0002"


@pytest.fixture
def operator_shop(home: Home, tmp_path: Path) -> Iterator[Shop]:
    """An operator whose database is its own (not the home's embedded one), as a bank's is."""
    with shop_session(home, f"sqlite:///{tmp_path / 'bank.db'}") as s:
        s.provision(T1, T2)
        yield s


def draw_once(monkeypatch: pytest.MonkeyPatch, wallet_id: str) -> None:
    """The next wallet id drawn is ``wallet_id``; the draws after it are random again."""
    real = wallet.issuance.new_wallet_id
    drawn = iter([wallet_id])
    monkeypatch.setattr(wallet.issuance, "new_wallet_id", lambda: next(drawn, None) or real())


def test_today_a_colliding_card_spends_the_first_cards_wallet(operator_shop: Shop,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    shop = operator_shop
    (a,) = shop.cards(1)
    first = shop.home.cards.load(a)
    draw_once(monkeypatch, first.wallet_id)
    (b,) = shop.cards(1)  # the operator refuses it (409 wallet_exists); the home's embedded operator takes it
    second = shop.home.cards.load(b)
    assert second.wallet_id == first.wallet_id and second.cert_der != first.cert_der
    shop.pay(T1, b, 1000)
    assert shop.sync(T1).settled == 1
    with shop.admin() as adm:
        assert adm.wallet(first.wallet_id).spent_fen == 1000  # card b's payment spent card a's wallet
    refused = shop.pay(T1, a, 2000, approved=False)  # card a's first payment: the terminal saw its counter
    assert (refused.reason.value, refused.detail) == ("replayed_counter", "card counter 0, this terminal has seen 1")
    shop.pay(T2, a, 2000)  # at another terminal: the same voucher id as card b's, another body
    res = shop.sync(T2)
    assert res.rejected == [{"voucher_id": f"{first.wallet_id}-00000001", "reason": "double_spend"}]
    with shop.admin() as adm:
        w = adm.wallet(first.wallet_id)
        assert (w.status, w.revoked_reason) == ("revoked", "double_spend")  # card a is a "clone" now


def test_today_a_scenario_stops_at_the_collision_and_leaves_the_card_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pos.scenario import parse_scenario, run_scenario
    from wallet.ids import new_wallet_id

    same = new_wallet_id()
    drawn = iter([same, same])
    monkeypatch.setattr(wallet.issuance, "new_wallet_id", lambda: next(drawn))
    f = tmp_path / "s.yaml"
    f.write_text("name: t\nclock: 2026-03-01T09:00:00+08:00\noperator: embedded\ncards:\n"
                 "  alice: {tier: 4, balance: 100.00}\n  bob: {tier: 4, balance: 50.00}\n"
                 "steps:\n  - pay: {terminal: CMGQ0001, card: alice, amount: 1}\n")
    r = run_scenario(parse_scenario(f), tmp_path / "home")
    assert r.steps[0].error == f"Conflict: wallet {same} is registered with another certificate"
    assert Home(tmp_path / "home").cards.ids() == ["c0001", "c0002"]  # bob's card, never registered, stays
