"""Tickets sold online, end to end through the CLI: sold from the online balance, learnt by the gate at sync or
looked up while online, admitted without charge and refused by anti-passback, unseen offline (then sold on the
spot), capacity shared between online and gate sales, a ticket used at two gates offline flagged, refunds before
use only, and every sale and credit made once however often it is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pos.cli.main import main
from pos.config import PACKAGE_DEFAULT
from pos.home import Home
from tests.support.shop import Shop, shop_session
from wallet import clock

SPOT = "320508000000201"  # Humble Administrator's Garden: adult ¥80.00, sells online, gates ZZYG0001 and ZZYG0002
GATE, GATE_2 = "ZZYG0001", "ZZYG0002"
DAY = "2026-05-01"
DEAD = "http://127.0.0.1:9"  # an operator that does not answer: the gate is offline


class Cli:
    """``pos ... --json`` in this process, on one home."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, dict[str, Any]]:
        code = main(["--home", str(self.root), *args, "--json"])
        out = self.capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}

    def sell(self, card: str, quantity: int = 1, sku: str = "adult") -> tuple[int, dict[str, Any]]:
        return self("ticket", "sell", "--merchant", SPOT, "--card", card, "--product", sku, "--date", DAY,
                    "--quantity", str(quantity))

    def tap(self, card: str, gate: str = GATE, *more: str) -> tuple[int, dict[str, Any]]:
        return self("ticket", "tap", "--terminal", gate, "--card", card, *more)

    def balance(self, card: str) -> tuple[int, int]:
        """(the card's purse, the wallet's online balance)."""
        _, shown = self("card", "show", card)
        return shown["balance_fen"], shown["online_fen"]


def small_spot(root: Path, capacity: int) -> None:
    """The shipped merchants.yaml with the garden's daily capacity set to ``capacity``."""
    text = PACKAGE_DEFAULT.read_text(encoding="utf-8")
    old = "gate: {daily_capacity: 20000, passback_window_s: 1800, online_tickets: true}"
    assert old in text
    root.mkdir(parents=True, exist_ok=True)
    (root / "merchants.yaml").write_text(text.replace(old, old.replace("20000", str(capacity))), encoding="utf-8")


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Cli, Shop, clock.VirtualClock]]:
    root = tmp_path / "home"
    small_spot(root, 4)
    vc = clock.VirtualClock.at(f"{DAY}T09:00")
    with clock.use(vc), shop_session(Home(root)) as shop:
        shop.provision(GATE, GATE_2, "ZZYS0001")
        cli = Cli(root, capsys)
        code, _ = cli("card", "issue", "--tier", "4", "--balance", "500", "--online", "300", "--count", "3")
        assert code == 0
        yield cli, shop, vc


def test_an_online_ticket_opens_without_charge_then_anti_passback_and_no_refund_after_use(world) -> None:
    cli, _, vc = world
    code, sold = cli.sell("c0001")
    assert code == 0 and sold["order"]["amount_fen"] == 8000 and sold["online_fen"] == 30000 - 8000
    order = sold["order"]["order_id"]
    code, synced = cli("sync", "--terminal", GATE)
    assert synced["online_tickets"]["orders_learnt"] == 1 and synced["online_tickets"]["online_sold"] == 1

    code, entered = cli.tap("c0001")
    assert code == 0 and entered["gate"]["code"] == "online" and entered["amount_fen"] == 0
    assert entered["message"] == "online ticket 1 of 1: please enter"
    assert cli.balance("c0001") == (50000, 22000)  # nothing charged, on the card or online

    vc.advance(10 * 60_000)  # within the garden's 30-minute window
    code, again = cli.tap("c0001")
    assert code == 1 and again["reason"] == "anti_passback" and again["amount_fen"] == 0
    assert cli.balance("c0001") == (50000, 22000)

    assert cli("sync", "--terminal", GATE)[1]["online_tickets"]["entries_reported"] == 1
    code, refused = cli("ticket", "refund", order)
    assert code == 1 and refused["reason"] == "ticket_used"
    _, listed = cli("ticket", "list", "--card", "c0001", "--date", DAY)
    assert [(o["order_id"], o["used"], o["flag"], o["card_id"]) for o in listed["orders"]] == [
        (order, 1, None, "c0001")]

    vc.advance(30 * 60_000)  # after the window the wallet buys at the gate as anyone would
    code, bought = cli.tap("c0001")
    assert code == 0 and bought["gate"]["code"] == "paid" and cli.balance("c0001") == (50000 - 8000, 22000)


def test_a_ticket_sold_after_the_last_sync_online_is_looked_up_offline_unseen_then_sold_on_the_spot(world) -> None:
    cli, _, _ = world
    cli("sync", "--terminal", GATE)  # the gate's last sync: before the sales below
    cli.sell("c0001")
    code, looked_up = cli.tap("c0001")  # online: the gate asks for a ticket it has not heard of
    assert code == 0 and looked_up["gate"]["code"] == "online" and looked_up["amount_fen"] == 0

    cli.sell("c0002")
    code, unseen = cli.tap("c0002", GATE, "--operator", DEAD)
    assert code == 1 and unseen["reason"] == "ticket_unseen" and unseen["amount_fen"] == 0
    assert unseen["message"].startswith("ticket bought after the gate's last sync (05-01 09:00): buy at the gate "
                                        "or wait for the connection")
    assert unseen["gate"]["next_step"] == "tap again within 2 min to buy at the gate"
    _, zh = cli.tap("c0003", GATE, "--operator", DEAD, "--lang", "zh-CN")
    assert "闸机上次同步" in zh["message"] and "现场购票" in zh["message"]
    assert cli.balance("c0002")[0] == 50000
    code, on_the_spot = cli.tap("c0002", GATE, "--operator", DEAD)  # tapped again: the normal gate sale
    assert code == 0 and on_the_spot["gate"]["code"] == "paid" and on_the_spot["amount_fen"] == 8000


def test_capacity_is_shared_between_online_sales_and_the_gate(world) -> None:
    cli, _, _ = world  # capacity 4 a day
    assert cli.sell("c0001", quantity=3)[0] == 0
    code, full = cli.sell("c0002", quantity=2)
    assert code == 1 and full["reason"] == "sold_out" and "only 1 place(s) left" in full["message"]
    cli("sync", "--terminal", GATE)
    code, paid = cli.tap("c0002")  # one place left at the gate
    assert code == 0 and paid["gate"]["code"] == "paid" and paid["gate"]["remaining"] == 0
    code, refused = cli.tap("c0003")  # online tickets and the gate's sale fill the day
    assert code == 1 and refused["reason"] == "capacity" and refused["amount_fen"] == 0
    assert cli("sync", "--terminal", GATE)[1]["online_tickets"]["online_sold"] == 3  # the gate's sale reported
    code, after = cli.sell("c0003")
    assert code == 1 and after["reason"] == "sold_out"  # the operator counts the gate's reported sale too
    # the other gate learns the day is full (online and this gate's reported sales) at its sync
    cli("sync", "--terminal", GATE_2)
    code, other = cli.tap("c0003", GATE_2)
    assert code == 1 and other["reason"] == "capacity"


def test_a_ticket_used_at_two_gates_offline_is_flagged(world) -> None:
    cli, _, _ = world
    _, sold = cli.sell("c0001")
    cli("sync", "--terminal", GATE)
    cli("sync", "--terminal", GATE_2)
    assert cli.tap("c0001", GATE, "--operator", DEAD)[1]["gate"]["code"] == "online"  # both gates offline
    assert cli.tap("c0001", GATE_2, "--operator", DEAD)[1]["gate"]["code"] == "online"
    cli("sync", "--terminal", GATE)
    cli("sync", "--terminal", GATE_2)
    code, flagged = cli("ticket", "list", "--flagged")
    assert code == 0 and [(o["order_id"], o["used"], o["flag"]) for o in flagged["orders"]] == [
        (sold["order"]["order_id"], 2, "overused")]
    cli("sync", "--terminal", GATE)  # once it knows, the first gate does not admit that ticket again
    code, refused = cli.tap("c0001", GATE)
    assert code == 1 and refused["reason"] == "anti_passback"


def test_refunds_credit_the_online_balance_once_and_the_gate_drops_the_ticket(world) -> None:
    cli, _, _ = world
    _, sold = cli.sell("c0001", quantity=2)
    cli("sync", "--terminal", GATE)
    order = sold["order"]["order_id"]
    code, refunded = cli("ticket", "refund", order)
    assert code == 0 and refunded["online_fen"] == 30000 and refunded["order"]["status"] == "refunded"
    code, again = cli("ticket", "refund", order)
    assert code == 0 and again["replayed"] and again["online_fen"] == 30000  # not credited twice
    cli("sync", "--terminal", GATE)
    code, tap = cli.tap("c0001", GATE, "--operator", DEAD)  # a refunded ticket opens nothing
    assert code == 1 and tap["reason"] == "ticket_unseen"


def test_bad_input_refusals_and_a_sale_or_credit_sent_twice(world) -> None:
    cli, shop, _ = world
    assert cli("ticket", "sell", "--merchant", SPOT, "--card", "c0001", "--product", "adult",
               "--date", "2026-04-30")[0] == 2  # a day that has passed
    code, tiger_hill = cli("ticket", "sell", "--merchant", "320505000000301", "--card", "c0001", "--product",
                           "adult", "--date", DAY)
    assert code == 2 and "sells no tickets online" in tiger_hill["error"]
    assert cli.sell("c0001", sku="vip")[0] == 2
    assert cli.sell("c0001", quantity=21)[0] == 2
    code, poor = cli.sell("c0001", quantity=4)  # ¥320.00 from ¥300.00
    assert code == 1 and poor["reason"] == "insufficient_online_balance"
    assert cli.balance("c0001")[1] == 30000
    code, over = cli("card", "load", "c0001", "--online", "--amount", "9800")  # tier 4: ¥10,000 cap
    assert code == 1 and over["reason"] == "over_balance_limit"
    assert cli("card", "issue", "--tier", "4", "--balance", "1", "--online", "10001")[0] == 2
    assert cli("card", "issue", "--tier", "4", "--balance", "1", "--online", "1", "--foreign")[0] == 2
    assert cli("ticket", "tap", "--terminal", "ZZYS0001", "--card", "c0001")[0] == 2  # not a gate

    _, shown = cli("card", "show", "c0001")  # a sale or a credit sent again after a lost answer is made once
    wallet = shown["wallet_id"]
    body = {"order_id": "TKREPLAY0001", "merchant_id": SPOT, "wallet_id": wallet, "sku": "adult", "day": DAY,
            "quantity": 1}
    with shop.admin() as admin:
        first = admin.call("POST", "/v1/admin/tickets", body, signed=False)
        second = admin.call("POST", "/v1/admin/tickets", body, signed=False)
        assert (first["replayed"], second["replayed"]) == (False, True) and second["online_fen"] == 22000
        credit = {"credit_id": "OCREPLAY0001", "amount_fen": 500}
        admin.call("POST", f"/v1/admin/wallets/{wallet}/online-credits", credit, signed=False)
        again = admin.call("POST", f"/v1/admin/wallets/{wallet}/online-credits", credit, signed=False)
        assert again["replayed"] and again["online_fen"] == 22500
    assert cli.balance("c0001")[1] == 22500
    _, listed = cli("ticket", "list", "--card", "c0001")
    assert [o["order_id"] for o in listed["orders"]] == ["TKREPLAY0001"]
