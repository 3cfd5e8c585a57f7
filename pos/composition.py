"""The composition root: where the terminal side builds the operator from a home.

The operator (:mod:`bank`) is configured by its own :class:`~bank.settings.OperatorSettings`; this module is the one
place that translates a terminal's home (HOME/pki, HOME/operator/, merchants.yaml, ``ECNY_OPERATOR_FAULT``) into
them, and the only module of :mod:`pos` that imports :mod:`bank`. The CLI calls it to serve or embed the operator;
the tester tools' offline fallbacks get the in-process operator from :func:`local_operator`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from bank.chains import Chain
from bank.embedded import EmbeddedOperator, serve, start_embedded
from bank.service import Operator
from bank.settings import OperatorSettings
from bank.tickets import TicketSpot
from pos.home import Home
from pos.sync.client import admin_token_path

ENV_FAULT = "ECNY_OPERATOR_FAULT"  # tests: "crash_before_commit" | "crash_after_commit"


def default_db_url(home: Home) -> str:
    """The embedded default database: a SQLite file under HOME/operator/."""
    directory = home.root / "operator"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'operator.db'}"


def operator_settings(home: Home, db_url: str | None = None) -> OperatorSettings:
    """The settings of a home's operator: its CA under HOME/pki, the terminals, chains and limits of merchants.yaml,
    the spots that sell tickets online (their tickets and daily capacity), its database (default: the embedded
    SQLite file)."""
    cfg = home.config
    return OperatorSettings(
        db_url=db_url or default_db_url(home),
        pki_dir=home.root / "pki",
        admin_token_path=admin_token_path(home),
        terminal_merchants={t.id: m.id for m in cfg.merchants for t in m.terminals},
        fee_bps=cfg.operator.fee_bps,
        offline_single_max=cfg.risk.offline_single_max,
        fault=os.environ.get(ENV_FAULT) or None,
        chains=tuple(Chain(m.id, tuple(s.id for s in cfg.merchants if s.parent == m.id), m.pools)
                     for m in cfg.merchants if any(s.parent == m.id for s in cfg.merchants)),
        ticket_spots={m.id: TicketSpot({p.sku: p.price for p in m.tickets}, m.gate.daily_capacity)
                      for m in cfg.merchants if m.gate is not None and m.gate.online_tickets},
    )


@contextmanager
def local_operator(home: Home, db_url: str | None = None) -> Iterator[Operator]:
    """The home's operator in-process, closed on exit (the tester tools' offline fallback)."""
    op = Operator.from_settings(operator_settings(home, db_url))
    try:
        yield op
    finally:
        op.close()


def start_embedded_operator(home: Home, db_url: str | None = None, port: int = 0) -> EmbeddedOperator:
    """Serve the home's operator on a free loopback port (or ``port``) in a background thread; call ``stop()``."""
    return start_embedded(operator_settings(home, db_url), port)


def serve_operator(home: Home, host: str, port: int, db_url: str | None = None, workers: int = 1) -> None:
    """Serve the home's operator in the foreground until interrupted (``pos operator serve``); with ``workers``
    above 1, that many processes share the port (PostgreSQL only: :func:`bank.asgi.serve_workers`)."""
    settings = operator_settings(home, db_url)
    if workers == 1:
        serve(settings, host, port)
        return
    from bank.asgi import serve_workers

    serve_workers(settings, host, port, workers, home.root / "operator" / f"workers-{port}.json")
