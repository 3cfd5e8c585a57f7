"""A whole shop on loopback for tests, demos and benchmarks: an embedded operator, provisioned terminals, cards.

    with shop_session(home) as shop:
        shop.provision("CMGQ0001")
        (card,) = shop.cards(1)
        shop.pay("CMGQ0001", card, 1230)
        shop.sync("CMGQ0001")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bank.embedded import EmbeddedOperator
from pos.cards.manage import issue_cards, tap_mock_card
from pos.composition import start_embedded_operator
from pos.home import Home
from pos.payment.outcome import Outcome
from pos.sync.client import OperatorClient, RetryPolicy, provision_terminal
from pos.sync.upload import SyncResult, sync_once

FAST_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05)


class Shop:
    """One home shared by the operator and its terminals (as in the demo)."""

    def __init__(self, home: Home, operator: EmbeddedOperator) -> None:
        self.home = home
        self.operator = operator

    @property
    def url(self) -> str:
        return self.operator.url

    def provision(self, *terminal_ids: str) -> None:
        for tid in terminal_ids:
            provision_terminal(self.home, tid, self.url)

    def cards(self, n: int = 1, tier: int = 4, balance_fen: int = 100_000, **kwargs: Any) -> list[str]:
        return [c.card_id for c in issue_cards(self.home, tier, balance_fen, n, operator_url=self.url, **kwargs)]

    def pay(self, terminal_id: str, card_id: str, amount_fen: int, approved: bool = True) -> Outcome:
        out = tap_mock_card(self.home, terminal_id, card_id, amount_fen)
        if approved:
            assert out.approved, f"{card_id} at {terminal_id}: {out.reason} {out.detail}"
        return out

    def client(self, terminal_id: str, transport: httpx.BaseTransport | None = None,
               retry: RetryPolicy | None = None) -> OperatorClient:
        return OperatorClient.for_terminal(self.home, terminal_id, self.url, transport=transport,
                                           retry=retry or FAST_RETRY)

    def admin(self) -> OperatorClient:
        return OperatorClient.for_admin(self.home, self.url, retry=FAST_RETRY)

    def sync(self, terminal_id: str, **kwargs: Any) -> SyncResult:
        kwargs.setdefault("retry", FAST_RETRY)
        return sync_once(self.home, terminal_id, self.url, **kwargs)


@contextmanager
def shop_session(home: Home, db_url: str | None = None) -> Iterator[Shop]:
    """An operator for ``home`` on a free loopback port (``POS_OPERATOR_URL`` points at it meanwhile)."""
    op = start_embedded_operator(home, db_url)
    old = os.environ.get("POS_OPERATOR_URL")
    os.environ["POS_OPERATOR_URL"] = op.url
    try:
        yield Shop(home, op)
    finally:
        if old is None:
            os.environ.pop("POS_OPERATOR_URL", None)
        else:
            os.environ["POS_OPERATOR_URL"] = old
        op.stop()
