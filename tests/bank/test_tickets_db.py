"""Online ticket sales racing at the operator, on SQLite and PostgreSQL: the day's capacity and a wallet's online
balance hold when sales arrive together, and every change reaches a gate once through the versions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pos.cards.online import credit_online
from pos.config import PACKAGE_DEFAULT
from pos.home import Home
from pos.sync.client import OperatorRefused
from tests.support.shop import Shop
from wallet import clock
from wire.tickets import TicketSyncAnswer

SPOT, GATE, DAY = "320508000000201", "ZZYG0001", "2026-05-01"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """The shipped merchants.yaml with the garden's capacity at 5 a day."""
    root = tmp_path / "home"
    root.mkdir()
    old = "gate: {daily_capacity: 20000, passback_window_s: 1800, online_tickets: true}"
    text = PACKAGE_DEFAULT.read_text(encoding="utf-8")
    assert old in text
    (root / "merchants.yaml").write_text(text.replace(old, old.replace("20000", "5")), encoding="utf-8")
    return Home(root)


@pytest.fixture(autouse=True)
def day() -> object:
    with clock.use(clock.VirtualClock.at(f"{DAY}T09:00")):
        yield


def sell(shop: Shop, n: int, wallet: str, quantity: int = 1, day: str = DAY) -> str:
    body = {"order_id": f"TKRACE{n:06d}", "merchant_id": SPOT, "wallet_id": wallet, "sku": "adult", "day": day,
            "quantity": quantity}
    try:
        with shop.admin() as admin:
            admin.call("POST", "/v1/admin/tickets", body, signed=False)
        return "sold"
    except OperatorRefused as exc:
        return exc.code


def wallets(shop: Shop, n: int, online_fen: int) -> list[str]:
    out = []
    for cid in shop.cards(n):
        wid = shop.home.cards.load(cid).wallet_id
        credit_online(shop.home, wid, online_fen, shop.url)
        out.append(wid)
    return out


def test_sales_racing_sell_the_capacity_exactly_and_a_wallet_spends_its_balance_once(shop: Shop) -> None:
    ws = wallets(shop, 8, 10_000)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: sell(shop, i, ws[i]), range(8)))
    assert sorted(results) == ["sold"] * 5 + ["sold_out"] * 3
    with shop.admin() as admin:
        orders = admin.call("GET", "/v1/admin/tickets", params={"day": DAY}, signed=False)["orders"]
        balances = [admin.wallet(w).online_fen for w in ws]
    assert len(orders) == 5 and sorted(balances) == [2_000] * 5 + [10_000] * 3  # the refused paid nothing

    (w,) = wallets(shop, 1, 12_000)  # the day after, a wallet with one adult ticket's worth and a half races itself
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: sell(shop, 100 + i, w, day="2026-05-02"), range(4)))
    assert sorted(results) == ["insufficient_online_balance"] * 3 + ["sold"]
    with shop.admin() as admin:
        assert admin.wallet(w).online_fen == 4_000


def test_a_gate_learns_each_change_once_through_the_versions(shop: Shop) -> None:
    shop.provision(GATE)
    ws = wallets(shop, 2, 20_000)
    with shop.client(GATE) as gate:
        def sync(since: int, uses: list[dict[str, object]] | None = None) -> TicketSyncAnswer:
            return TicketSyncAnswer.model_validate(gate.call("POST", "/v1/tickets/sync", {
                "since": since, "day": DAY, "gate_sold": 1, "uses": uses or []}))

        assert sell(shop, 1, ws[0], 2) == "sold"
        first = sync(0)
        assert [(o.order_id, o.quantity) for o in first.orders] == [("TKRACE000001", 2)]
        assert (first.online_sold, first.others_sold, first.capacity) == (2, 0, 5)
        assert sync(first.version).orders == []  # nothing new: nothing again
        assert sell(shop, 2, ws[1]) == "sold"
        used = sync(first.version, [{"order_id": "TKRACE000001", "used": 1}])
        assert {o.order_id: (o.used, o.used_here) for o in used.orders} == {"TKRACE000001": (1, 1),
                                                                             "TKRACE000002": (0, 0)}
        assert sync(used.version, [{"order_id": "TKRACE000001", "used": 1}]).orders == []  # a repeat changes nothing
    assert sell(shop, 3, ws[1], 2) == "sold_out"  # 3 online + 1 sold at the gate: one place left


def test_the_spots_reach_every_worker_of_the_operator(tmp_path: Path) -> None:
    from bank.asgi import settings_from_json, settings_to_json
    from bank.settings import OperatorSettings
    from bank.tickets import TicketSpot

    settings = OperatorSettings("postgresql+psycopg://h/db", tmp_path,
                                ticket_spots={SPOT: TicketSpot({"adult": 8000, "child": 4000}, 5)})
    assert settings_from_json(settings_to_json(settings)).ticket_spots == settings.ticket_spots
