"""Merchants' corporate wallets and chains, end to end through the CLI: payments at two stores of a pooling chain,
a refund, sync, the statements of each store and of the parent, the daily sweep moved exactly once (repeated, its
answer lost, run concurrently by HTTP and by other operator processes, on SQLite and PostgreSQL), and bad chains in
merchants.yaml refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from bank import accounts
from bank.schema import accounts as accounts_table
from bank.schema import movements, vouchers
from bank.service import Operator
from pos.cli.main import main
from pos.composition import operator_settings
from pos.home import Home
from tests.bank.conftest import _postgres, operator_db  # noqa: F401 - the SQLite/PostgreSQL fixtures
from tests.support.faults import FaultTransport
from tests.support.shop import FAST_RETRY, Shop, shop_session
from wallet import clock
from wallet.clock import VirtualClock
from wire.errors import Conflict

PARENT, STORE_A, STORE_B = "320508000000900", "320508000000901", "320508000000902"
CHAIN = f"""
operator:
  name: {{zh: Demo operator, en: Demo operator}}
  url: http://127.0.0.1:8700
merchants:
  - id: "{STORE_A}"
    name: {{zh: Store A, en: Store A}}
    category: carrier_store
    parent: "{PARENT}"
    terminals:
      - {{id: STRA0001, kind: counter}}
      - {{id: STRA0002, kind: counter}}
  - id: "{STORE_B}"
    name: {{zh: Store B, en: Store B}}
    category: carrier_store
    parent: "{PARENT}"
    terminals:
      - {{id: STRB0001, kind: counter}}
  - id: "{PARENT}"
    name: {{zh: Carrier company, en: Carrier company}}
    category: company
    pools: daily
"""
DAY1, DAY2, DAY3 = "2026-03-02", "2026-03-03", "2026-03-04"
SHOP_STORE, SHOP_PARENT = "320508000000101", "320508000000100"  # the shipped demo chain (CMGQ0001, CMGQ0002)


def cli(capsys: pytest.CaptureFixture[str], home: Home, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["--home", str(home.root), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def ok(capsys: pytest.CaptureFixture[str], home: Home, *args: str) -> dict[str, Any]:
    code, data = cli(capsys, home, *args)
    assert code == 0, (args, data)
    return data


@pytest.fixture
def virtual() -> Iterator[VirtualClock]:
    with clock.use(VirtualClock.at(f"{DAY1}T10:00")) as c:
        assert isinstance(c, VirtualClock)
        yield c


def move_to(c: VirtualClock, when: str) -> None:
    c.set(clock.parse_instant(when))


def terminal_line(store: dict[str, Any], tid: str) -> dict[str, Any]:
    return next(x for x in store["lines"] if x["terminal_id"] == tid)


def test_a_chain_of_two_stores_statements_and_sweep_through_the_cli(capsys, tmp_path: Path, virtual) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    (home.root / "merchants.yaml").write_text(CHAIN)
    with shop_session(home) as shop:
        for tid in ("STRA0001", "STRA0002", "STRB0001"):
            ok(capsys, home, "terminal", "provision", tid)
        ok(capsys, home, "card", "issue", "--tier", "4", "--balance", "1000", "--count", "2")
        paid = ok(capsys, home, "pay", "--terminal", "STRA0001", "--card", "c0001", "--amount", "12.30")
        ok(capsys, home, "pay", "--terminal", "STRA0002", "--card", "c0002", "--amount", "20")
        ok(capsys, home, "pay", "--terminal", "STRB0001", "--card", "c0001", "--amount", "8")
        for tid in ("STRA0001", "STRA0002", "STRB0001"):
            assert ok(capsys, home, "sync", "--terminal", tid)["settled"] == 1
        ok(capsys, home, "refund", "--terminal", "STRA0001", "--voucher", paid["voucher_id"], "--amount", "5")
        _campaign_voucher(shop, "STRB0001", STORE_B, paid=1000, discount=500)  # what a settled discount leaves

        a = ok(capsys, home, "merchant", "statement", "--merchant", STORE_A)  # today: open, nothing swept yet
        assert (a["date"], a["closed"], a["role"], a["parent_id"], a["pools"]) == (DAY1, False, "store", PARENT,
                                                                                   "daily")
        (block,) = a["stores"]
        a1, a2 = terminal_line(block, "STRA0001"), terminal_line(block, "STRA0002")
        assert (a1["count"], a1["gross_fen"], a1["refund_count"], a1["refunds_fen"], a1["fee_fen"],
                a1["net_fen"]) == (1, 1230, 1, 500, 0, 730)
        assert (a2["gross_fen"], a2["net_fen"]) == (2000, 2000)
        assert block["totals"]["net_fen"] == a["totals"]["net_fen"] == 2730
        assert block["sweep"] is None and not a["sweep_due"]
        assert (a["opening_fen"], a["closing_fen"]) == (0, 2730)

        p = ok(capsys, home, "merchant", "statement", "--merchant", PARENT)
        assert p["role"] == "parent" and [s["merchant_id"] for s in p["stores"]] == [STORE_A, STORE_B]
        b1 = terminal_line(p["stores"][1], "STRB0001")
        assert (b1["count"], b1["gross_fen"], b1["discount_fen"], b1["net_fen"]) == (2, 2300, 500, 2300)
        assert p["totals"]["net_fen"] == 2730 + 2300 and p["swept_in_fen"] == 0

        code, refused = cli(capsys, home, "merchant", "sweep", "--date", DAY1)
        assert code == 1 and refused["reason"] == "day_open"  # the day is not over: nothing moves
        assert cli(capsys, home, "merchant", "statement", "--merchant", "320508000000999")[0] == 2
        assert cli(capsys, home, "merchant", "sweep", "--date", DAY1[:7])[0] == 2

        move_to(virtual, f"{DAY2}T09:00")
        swept = ok(capsys, home, "merchant", "sweep", "--date", DAY1)
        assert swept["moved_fen"] == 2730 + 2300
        assert {(s["store_id"], s["amount_fen"], s["replayed"]) for s in swept["sweeps"]} == {
            (STORE_A, 2730, False), (STORE_B, 2300, False)}
        again = ok(capsys, home, "merchant", "sweep")  # yesterday, again: on file, nothing more moves
        assert again["moved_fen"] == 0 and all(s["replayed"] for s in again["sweeps"])

        a = ok(capsys, home, "merchant", "statement", "--merchant", STORE_A, "--date", DAY1)
        assert a["closed"] and a["stores"][0]["sweep"]["amount_fen"] == 2730 and not a["sweep_due"]
        assert (a["opening_fen"], a["closing_fen"]) == (0, 0)  # the day's net went to the parent
        p = ok(capsys, home, "merchant", "statement", "--merchant", PARENT, "--date", DAY1)
        assert p["swept_in_fen"] == 5030 and {s["store_id"] for s in p["sweeps_in"]} == {STORE_A, STORE_B}
        assert (p["opening_fen"], p["closing_fen"]) == (0, 5030)

        # day 2: a sale at store B; on day 3 its statement for day 2 sweeps the closed day first
        ok(capsys, home, "pay", "--terminal", "STRB0001", "--card", "c0002", "--amount", "10")
        ok(capsys, home, "sync", "--terminal", "STRB0001")
        move_to(virtual, f"{DAY3}T09:00")
        b = ok(capsys, home, "merchant", "statement", "--merchant", STORE_B, "--date", DAY2)
        assert b["stores"][0]["sweep"]["amount_fen"] == 1000 and not b["sweep_due"]

        # day 3: only a refund at store A (what was left of its day-1 sale): the parent covers it at the sweep
        ok(capsys, home, "refund", "--terminal", "STRA0001", "--voucher", paid["voucher_id"])
        move_to(virtual, "2026-03-05T09:00")
        a = ok(capsys, home, "merchant", "statement", "--merchant", STORE_A, "--date", DAY3)
        assert a["totals"]["net_fen"] == -730 and a["stores"][0]["sweep"]["amount_fen"] == -730
        with shop.admin() as admin:
            assert admin.account(STORE_A)["balance_fen"] == admin.account(STORE_B)["balance_fen"] == 0
            assert admin.account(PARENT)["balance_fen"] == 6030 - 730
        assert main(["--home", str(home.root), "merchant", "statement", "--merchant", PARENT, "--date",
                     DAY1]) == 0
        text = capsys.readouterr().out
        assert "received by sweeps: ¥50.30 from 2 stores" in text and "STRB0001" in text


def _campaign_voucher(shop: Shop, tid: str, merchant_id: str, paid: int, discount: int) -> None:
    """A settled voucher whose campaign paid ``discount`` (the merchant is credited paid + discount)."""
    def run(conn: Any) -> None:
        t = clock.now_ms()
        conn.execute(insert(vouchers).values(
            voucher_id="0991000000000001-00000099", wallet_id="0991000000000001", counter=99, body_hash="0" * 64,
            voucher=b"\0", amount_fen=paid, fee_fen=0, refunded_fen=0, merchant_id=merchant_id, terminal_id=tid,
            timestamp_ms=t, day=DAY1, settled_ms=t, discount=discount))
        accounts.credit(conn, merchant_id, paid + discount, 0, kind="payment", reference="0991000000000001-00000099",
                        terminal_id=tid)

    shop.operator.operator.store.write(run)


def _wallets_add_up(op: Operator, *merchants: str) -> None:
    """Each corporate wallet's balance is the sum of its movements."""
    with op.engine.connect() as conn:
        for mid in merchants:
            balance = conn.execute(select(accounts_table.c.balance_fen).where(
                accounts_table.c.merchant_id == mid)).scalar()
            total = conn.execute(select(func.sum(movements.c.amount_fen)).where(
                movements.c.merchant_id == mid)).scalar()
            assert balance == total, mid


@pytest.fixture
def chain_shop(home: Home, operator_db: str, virtual: VirtualClock) -> Iterator[Shop]:  # noqa: F811
    with shop_session(home, operator_db) as s:
        s.provision("CMGQ0001", "CMGQ0002")
        yield s


def test_the_sweep_moves_each_day_once_retried_and_concurrent(chain_shop: Shop, operator_db: str,  # noqa: F811
                                                              virtual: VirtualClock) -> None:
    """The shipped demo chain (one pooling carrier store under its company) on each operator database: day 1 and
    day 2 swept by six concurrent sweepers of day 2 (HTTP and other operator processes), an answer lost and
    retried, and a credit that reaches a swept day late going with the next sweep."""
    shop = chain_shop
    card, other = shop.cards(2)
    shop.pay("CMGQ0001", card, 1230)
    shop.pay("CMGQ0002", other, 2000)
    shop.sync("CMGQ0001"), shop.sync("CMGQ0002")
    move_to(virtual, f"{DAY2}T11:00")
    shop.pay("CMGQ0001", card, 700)
    shop.sync("CMGQ0001")
    move_to(virtual, f"{DAY3}T00:00:01")

    others = [Operator.from_settings(operator_settings(shop.home, operator_db)) for _ in range(3)]
    answers: list[Any] = []
    start = threading.Barrier(6)

    def by_http() -> None:
        with shop.admin() as a:
            start.wait()
            answers.append(a.call("POST", f"/v1/admin/sweeps/{DAY2}", {}, signed=False))

    def in_process(op: Operator) -> None:
        start.wait()
        answers.append(op.sweep(DAY2).model_dump())

    threads = [threading.Thread(target=by_http) for _ in range(3)]
    threads += [threading.Thread(target=in_process, args=(op,)) for op in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for op in others:
        op.close()
    assert len(answers) == 6
    assert sum(a["moved_fen"] for a in answers) == 3930
    (first,) = [a for a in answers if a["moved_fen"]]
    assert [(s["day"], s["amount_fen"]) for s in first["sweeps"]] == [(DAY1, 3230), (DAY2, 700)]  # day 1 first

    lost = FaultTransport(["timeout_after"], match="/sweeps/")  # done, the answer lost: the client asks again
    from pos.sync.client import OperatorClient

    with OperatorClient.for_admin(shop.home, shop.url, transport=lost, retry=FAST_RETRY) as a:
        retried = a.call("POST", f"/v1/admin/sweeps/{DAY2}", {}, signed=False)
    assert lost.sent == 2 and retried["moved_fen"] == 0 and retried["sweeps"][0]["replayed"]

    op = shop.operator.operator
    # a credit of day 2 (an online sale, say) that commits after day 2's sweep
    op.store.write(lambda conn: accounts.post(conn, SHOP_STORE, "online", "order-1", 300, day=DAY2))
    with pytest.raises(Conflict):
        op.sweep(DAY3)  # today
    move_to(virtual, f"{DAY3}T23:00")
    day2 = op.statement(SHOP_STORE, DAY2)
    online = next(x for x in day2.stores[0].lines if x.kind == "online")
    assert (online.gross_fen, online.net_fen, day2.stores[0].sweep.amount_fen) == (300, 300, 700)  # type: ignore[union-attr]
    move_to(virtual, "2026-03-05T08:00")
    assert op.sweep(DAY3).moved_fen == 300  # the late credit goes with the next day's sweep, not lost
    assert op.sweep(DAY3).moved_fen == 0
    with shop.admin() as a:
        assert a.account(SHOP_STORE)["balance_fen"] == 0 and a.account(SHOP_PARENT)["balance_fen"] == 4230
    _wallets_add_up(op, SHOP_STORE, SHOP_PARENT)


BAD_CHAINS = [
    ((f'parent: "{PARENT}"', 'parent: "320508000000999"'), "merchants[0].parent", "is not a merchant"),
    ((f'parent: "{PARENT}"', f'parent: "{STORE_A}"'), "merchants[0].parent", "names itself"),
    (("pools: daily", f'pools: daily\n    parent: "{STORE_A}"'), "merchants[0].parent", "circle"),
    (("    pools: daily\n", f'    pools: daily\n  - id: "320508000000903"\n    name: {{zh: C, en: C}}\n'
                            f'    category: shop\n    parent: "{STORE_B}"\n    terminals: [{{id: STRC0001, '
                            'kind: counter}]\n'), "merchants[3].parent", "one level deep"),
    (("    category: carrier_store\n    parent", "    category: carrier_store\n    pools: daily\n    parent"),
     "merchants[0].pools", "belongs on a chain's parent"),
    (("    terminals:\n      - {id: STRB0001, kind: counter}", "    terminals: []"), "merchants[1].terminals",
     "at least one terminal"),
]


@pytest.mark.parametrize(("edit", "where", "what"), BAD_CHAINS)
def test_a_bad_chain_in_merchants_yaml_is_refused_with_its_key(capsys, tmp_path: Path, edit, where, what) -> None:
    old, new = edit
    assert old in CHAIN
    bad = tmp_path / "merchants.yaml"
    bad.write_text(CHAIN.replace(old, new, 1))
    code = main(["--home", str(tmp_path / "home"), "--config", str(bad), "merchants", "--json"])
    err = json.loads(capsys.readouterr().out)
    assert code == 2 and err["code"] == "config"
    assert err["error"].startswith(f"{bad}: {where}: ") and what in err["error"]
