"""Fixtures for the operator tests: a shop (embedded operator on loopback + terminals + cards) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bank.testing import Shop, shop_session
from pos.home import Home


@pytest.fixture
def shop(home: Home) -> Iterator[Shop]:
    with shop_session(home) as s:
        s.provision("CMGQ0001", "CMGQ0002", "ZZYS0001")
        yield s
