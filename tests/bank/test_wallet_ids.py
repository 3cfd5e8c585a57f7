"""The operator is the authority on wallet ids: a wallet id on file with another certificate is refused (409
``wallet_exists``, :class:`wire.errors.WalletExists`) and the wallet on file stays as it is; the same certificate
again changes nothing; two registrations of one id racing leave exactly one on file. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import bank.wallets
from bank.schema import wallets
from bank.service import Operator
from pos.composition import local_operator
from pos.home import Home
from pos.sync.client import OperatorRefused, WalletIdRefused
from tests.support.shop import Shop
from wallet.card import CardState
from wallet.errors import WalletIdTaken
from wallet.issuance import issue_card
from wire.errors import Conflict, WalletExists


def cards_sharing_an_id(home: Home, n: int = 2) -> list[CardState]:
    """``n`` cards issued by the operator's CA under one wallet id, each with its own key and certificate."""
    first = issue_card(home.pki, "c0001", 4, 10_000)
    return [first] + [issue_card(home.pki, f"c{i:04d}", 4, 20_000 * i, wallet_id=first.wallet_id)
                      for i in range(2, n + 1)]


def row(s: CardState) -> tuple[str, int, bytes, int]:
    return s.wallet_id, s.tier, s.cert_der, s.balance_fen


def cert_on_file(op: Operator, wallet_id: str) -> bytes:
    with op.store.engine.connect() as conn:
        return bytes(conn.execute(select(wallets.c.cert_der).where(wallets.c.wallet_id == wallet_id)).scalar_one())


def test_an_id_on_file_with_another_certificate_is_refused_in_process(home: Home, operator_db: str) -> None:
    first, second = cards_sharing_an_id(home)
    other = issue_card(home.pki, "c0009", 4, 5_000)
    with local_operator(home, operator_db) as op:
        assert op.register_wallet(*row(first)).status == "registered"
        with pytest.raises(WalletExists) as err:
            op.register_wallet(*row(second))
        assert isinstance(err.value, Conflict) and isinstance(err.value, WalletIdTaken)
        assert (err.value.status, err.value.code, err.value.wallet_ids) == (409, "wallet_exists", (first.wallet_id,))
        assert err.value.to_json() == {"error": {"code": "wallet_exists", "message":
                                                 f"wallet {first.wallet_id} is registered with another certificate"}}
        w = op.wallet(first.wallet_id)
        assert (w.loaded_fen, w.status) == (10_000, "active") and cert_on_file(op, first.wallet_id) == first.cert_der
        # a batch: refused whole, naming every id of it on file with another certificate
        third = issue_card(home.pki, "c0003", 4, 1, wallet_id=other.wallet_id)
        op.register_wallet(*row(other))
        with pytest.raises(WalletExists) as err:
            op.register_wallets([row(second), row(issue_card(home.pki, "c0004", 4, 1)), row(third)])
        assert err.value.wallet_ids == (first.wallet_id, other.wallet_id)
        assert "(and 1 more of the batch)" in str(err.value)


def test_the_same_certificate_again_is_idempotent(home: Home, operator_db: str) -> None:
    (card,) = cards_sharing_an_id(home, 1)
    with local_operator(home, operator_db) as op:
        op.register_wallet(*row(card))
        op.issue_load_token(card.wallet_id, 500)
        again = op.register_wallet(card.wallet_id, card.tier, card.cert_der, 99_999)  # another opening: ignored
        assert (again.wallet_id, again.status) == (card.wallet_id, "registered")
        op.register_wallets([row(card), row(card)])
        w = op.wallet(card.wallet_id)
        assert (w.loaded_fen, w.load_counter) == (10_000, 1)


def test_over_http_the_refusal_is_a_409_wallet_exists(shop: Shop) -> None:
    first, second = cards_sharing_an_id(shop.home)
    with shop.admin() as adm:
        adm.register_wallet(*row(first))
        token = adm.admin_token
        with pytest.raises(WalletIdRefused) as err:
            adm.register_wallet(*row(second))
        assert isinstance(err.value, OperatorRefused) and isinstance(err.value, WalletIdTaken)
        assert (err.value.status, err.value.code, err.value.wallet_ids) == (409, "wallet_exists", (first.wallet_id,))
        assert adm.register_wallet(*row(first)).status == "registered"  # the same certificate: as on file
        assert adm.wallet(first.wallet_id).loaded_fen == 10_000
    body = {"wallet_id": second.wallet_id, "tier": second.tier, "certificate": second.cert_der.hex(),
            "opening_balance_fen": second.balance_fen}
    r = httpx.post(shop.url + "/v1/admin/wallets", json=body, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 409
    assert r.json() == {"error": {"code": "wallet_exists",
                                  "message": f"wallet {first.wallet_id} is registered with another certificate"}}
    paths = httpx.get(shop.url + "/openapi.json").json()["paths"]
    assert "409" in paths["/v1/admin/wallets"]["post"]["responses"]


@pytest.fixture
def two_operators(home: Home, operator_db: str) -> Iterator[tuple[Operator, Operator]]:
    """Two operators on one database, each with its own engine and write lock (two operator processes)."""
    with ExitStack() as stack:
        yield stack.enter_context(local_operator(home, operator_db)), stack.enter_context(local_operator(home,
                                                                                                          operator_db))


def test_a_registration_race_of_one_id_leaves_exactly_one_winner(home: Home,
                                                                 two_operators: tuple[Operator, Operator]) -> None:
    rounds = 8
    pairs = [cards_sharing_an_id(home) for _ in range(rounds)]
    outcomes: list[list[str]] = [["", ""] for _ in range(rounds)]
    start = threading.Barrier(2)

    def issuer(k: int) -> None:
        for n, pair in enumerate(pairs):
            start.wait(timeout=60)
            try:
                two_operators[k].register_wallet(*row(pair[k]))
                outcomes[n][k] = "registered"
            except WalletExists:
                outcomes[n][k] = "wallet_exists"

    threads = [threading.Thread(target=issuer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for pair, outcome in zip(pairs, outcomes, strict=True):
        assert sorted(outcome) == ["registered", "wallet_exists"]
        winner = pair[outcome.index("registered")]
        assert cert_on_file(two_operators[0], winner.wallet_id) == winner.cert_der


def test_the_loser_of_a_race_sees_the_winner_once_its_insert_fails(
        home: Home, operator_db: str, two_operators: tuple[Operator, Operator],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving forced: issuer A finds the id free, issuer B registers it, then A inserts. A's insert hits
    the primary key, its transaction runs again and finds B's wallet: refused, B's on file."""
    if operator_db.startswith("sqlite"):
        pytest.skip("SQLite writers begin IMMEDIATE: B waits for A's transaction, no interleaving to force")
    a, b = two_operators
    card_a, card_b = cards_sharing_an_id(home)
    real = bank.wallets.insert
    inserts: list[str] = []

    def racing_insert(table: Any) -> Any:
        inserts.append("a" if not inserts else "b" if len(inserts) == 1 else "a again")
        if len(inserts) == 1:
            b.register_wallet(*row(card_b))  # meanwhile: B's registration, committed
        return real(table)

    monkeypatch.setattr(bank.wallets, "insert", racing_insert)
    with pytest.raises(WalletExists):
        a.register_wallet(*row(card_a))
    assert inserts == ["a", "b"]  # A's second attempt found B's wallet before inserting
    assert cert_on_file(a, card_a.wallet_id) == card_b.cert_der
    assert a.wallet(card_a.wallet_id).loaded_fen == card_b.balance_fen

