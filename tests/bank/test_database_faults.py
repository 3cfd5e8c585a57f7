"""The operator survives its database: connections killed under a settlement (``pg_terminate_backend``, from engine
event hooks at a chosen statement, deterministic) are retried inside the operator with the batch's transaction run
again whole, every voucher settles exactly once and is answered ``settled``; a database that is not there is a typed
503 with ``Retry-After``, never a text/plain 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event

from bank.app import create_app
from bank.service import Operator
from bank.settings import load_pki
from pos.sync.client import RetryPolicy
from tests.support.shop import Shop
from wallet.keys import new_key
from wire import signing

T1 = "CMGQ0001"
ONE_TRY = RetryPolicy(attempts=1)
pg_only = pytest.mark.parametrize("operator_db", ["postgresql"], indirect=True)


def _terminate(admin: Any, sa_conn: Any) -> None:
    pid = sa_conn.connection.dbapi_connection.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _books(shop: Shop, card_ids: list[str]) -> tuple[int, list[int]]:
    with shop.admin() as a:
        settled = a.account("320508000000101")["settled_fen"]
        spent = [a.wallet(shop.home.cards.load(c).wallet_id)["spent_fen"] for c in card_ids]
    return settled, spent


@pg_only
def test_a_connection_killed_mid_batch_is_retried_whole(shop: Shop, _postgres: Any) -> None:
    cards = shop.cards(3)
    for i, c in enumerate(cards):
        shop.pay(T1, c, 100 * (i + 1))
    engine = shop.operator.operator.engine
    killed: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def kill(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO VOUCHERS") and not killed:
            killed.append(1)
            _terminate(_postgres, conn)

    result = shop.sync(T1, retry=ONE_TRY)  # the operator retries inside: the terminal asks once
    assert killed and (result.settled, result.duplicate, result.rejected) == (3, 0, [])
    assert _books(shop, cards) == (600, [100, 200, 300])


@pg_only
def test_a_batch_committed_before_its_connection_died_is_answered_settled(shop: Shop, _postgres: Any) -> None:
    cards = shop.cards(2)
    for c in cards:
        shop.pay(T1, c, 250)
    engine = shop.operator.operator.engine
    killed: list[int] = []

    @event.listens_for(engine, "commit")
    def commit_then_die(conn: Any) -> None:
        if killed or not conn.info.get("wrote_vouchers"):
            return
        killed.append(1)
        dbapi = conn.connection.dbapi_connection
        dbapi.commit()  # the batch is durable ...
        _terminate(_postgres, conn)
        dbapi.execute("SELECT 1")  # ... and its connection is gone before the operator hears it committed

    @event.listens_for(engine, "before_cursor_execute")
    def mark(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO VOUCHERS"):
            conn.info["wrote_vouchers"] = True

    result = shop.sync(T1, retry=ONE_TRY)  # the operator retries inside: the terminal asks once
    assert killed and (result.settled, result.duplicate) == (2, 0)  # its own upload's vouchers: settled
    assert _books(shop, cards) == (500, [250, 250])
    again = shop.sync(T1)  # nothing pending: the terminal recorded the answers
    assert again.uploaded == 0


def test_a_database_that_is_not_there_is_a_typed_503(tmp_path: Path) -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2})
    op = Operator(engine, load_pki(tmp_path / "pki"), {T1: "320508000000101"}, admin_token="t0ken", db_retries=2)
    try:
        client = TestClient(create_app(op), raise_server_exceptions=False)
        answers = [client.get("/v1/admin/accounts/320508000000101", headers={"authorization": "Bearer t0ken"}),
                   client.post("/v1/admin/wallets/0991000000000001/loads/1/confirm",
                               headers={"authorization": "Bearer t0ken"}),
                   client.post("/v1/settlements", content=b"{}",
                               headers=signing.sign_request(new_key(), T1, "POST", "/v1/settlements", "", b"{}"))]
        for r in answers:
            assert r.status_code == 503 and r.headers["content-type"].startswith("application/json"), r.text
            assert r.json()["error"]["code"] == "database_unavailable" and int(r.headers["retry-after"]) > 0
    finally:
        op.close()
