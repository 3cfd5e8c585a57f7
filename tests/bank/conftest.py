"""Fixtures for the operator tests: a shop (embedded operator on loopback + terminals + cards) per test, on each
storage the operator supports: SQLite (the embedded default) and PostgreSQL.

PostgreSQL is reached at ``ECNY_TEST_POSTGRES_URL`` (default: the local server, trust auth, database ``test``);
each test gets a schema of its own, dropped after it. Without a server or without psycopg the PostgreSQL cases
skip with the reason, except where ``ECNY_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from pos.home import Home
from tests.support.shop import Shop, shop_session

POSTGRES_URL = os.environ.get("ECNY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _unavailable(why: str) -> None:
    if os.environ.get("ECNY_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def _postgres() -> Iterator[object]:
    """One administrative connection for the session (schemas are made and dropped through it)."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        conn = psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unavailable(f"no PostgreSQL at {POSTGRES_URL}: {exc}".strip())
    yield conn
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def operator_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty operator database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'operator.db'}"
        return
    conn = request.getfixturevalue("_postgres")
    schema = f"ecny_test_{secrets.token_hex(6)}"
    conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[attr-defined]
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[attr-defined]


@pytest.fixture
def shop(home: Home, operator_db: str) -> Iterator[Shop]:
    with shop_session(home, operator_db) as s:
        s.provision("CMGQ0001", "CMGQ0002", "ZZYS0001")
        yield s
