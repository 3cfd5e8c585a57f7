"""The operator as an app factory for process managers: ``uvicorn --factory bank.asgi:create_app`` (or gunicorn with
uvicorn workers), one :class:`~bank.service.Operator` per worker process, all on one PostgreSQL database.

A worker is configured by environment variables (a process manager starts it by import string, so nothing can be
passed in Python):

- ``ECNY_OPERATOR_SETTINGS``: a JSON file holding the settings (see :func:`settings_to_json`), written by
  ``pos operator serve --workers N``; or, without it,
- ``ECNY_OPERATOR_DB`` (SQLAlchemy URL) and ``ECNY_OPERATOR_PKI`` (the CA directory), the minimum for a worker
  started by hand; ``ECNY_OPERATOR_FEE_BPS`` and ``ECNY_OPERATOR_OFFLINE_SINGLE_MAX`` are optional.

Each worker warms up before it takes requests (:meth:`Operator.warm_up`). Several workers (or several hosts) share
nothing but the database: exactly-once settlement, double-spend detection, denylist versions, refunds and nonces
are decided there (unique keys and row locks), never in a worker's memory. SQLite is the single-worker embedded
default: :func:`serve_workers` refuses more than one worker on it.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bank.app import create_app as app_over
from bank.chains import Chain
from bank.service import Operator
from bank.settings import OperatorSettings
from bank.tickets import spots_from_json, spots_to_json
from wallet.errors import InvalidInput

ENV_SETTINGS = "ECNY_OPERATOR_SETTINGS"
ENV_DB = "ECNY_OPERATOR_DB"
ENV_PKI = "ECNY_OPERATOR_PKI"
ENV_FEE = "ECNY_OPERATOR_FEE_BPS"
ENV_SINGLE_MAX = "ECNY_OPERATOR_OFFLINE_SINGLE_MAX"
GC_THRESHOLD = 50_000  # as bank.embedded.serve: allocations between young-generation collections


def settings_to_json(settings: OperatorSettings) -> dict[str, Any]:
    """Every setting as JSON (what :data:`ENV_SETTINGS` names a file of); ``fault`` (tests only) is not carried."""
    data: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "fault":
            continue
        if isinstance(value, Path):
            value = str(value)
        elif f.name == "terminal_merchants":
            value = dict(value)
        elif f.name == "chains":
            value = [{"parent_id": c.parent_id, "stores": list(c.stores), "pools": c.pools} for c in value]
        elif f.name == "ticket_spots":
            value = spots_to_json(value)
        data[f.name] = value
    return data


def settings_from_json(data: dict[str, Any]) -> OperatorSettings:
    """The settings :func:`settings_to_json` wrote; a setting it does not hold keeps its default."""
    known = {f.name for f in fields(OperatorSettings)} - {"fault"}
    values = {name: value for name, value in data.items() if name in known}
    for name in ("pki_dir", "admin_token_path"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    if "chains" in values:
        values["chains"] = tuple(Chain(c["parent_id"], tuple(c["stores"]), c.get("pools")) for c in values["chains"])
    if "ticket_spots" in values:
        values["ticket_spots"] = spots_from_json(values["ticket_spots"] or {})
    return OperatorSettings(**values)


def settings_from_env(env: dict[str, str] | None = None) -> OperatorSettings:
    """The settings a worker reads from its environment (see the module's documentation)."""
    env = dict(os.environ if env is None else env)
    if env.get(ENV_SETTINGS):
        return settings_from_json(json.loads(Path(env[ENV_SETTINGS]).read_text()))
    if not env.get(ENV_DB) or not env.get(ENV_PKI):
        raise InvalidInput(f"set {ENV_SETTINGS} (a settings file) or both {ENV_DB} and {ENV_PKI}")
    single = env.get(ENV_SINGLE_MAX)
    return OperatorSettings(db_url=env[ENV_DB], pki_dir=Path(env[ENV_PKI]), fee_bps=int(env.get(ENV_FEE) or 0),
                            offline_single_max=int(single) if single else None)


def is_sqlite(db_url: str) -> bool:
    return db_url.split(":", 1)[0].split("+", 1)[0].lower() == "sqlite"


def create_app() -> FastAPI:
    """One worker's app: its own operator over the shared database, warmed up, closed when the worker stops."""
    op = Operator.from_settings(settings_from_env())
    op.warm_up()
    app = app_over(op)
    app.router.on_shutdown.append(op.close)
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    return app


def serve_workers(settings: OperatorSettings, host: str, port: int, workers: int, settings_file: Path) -> None:
    """Serve with ``workers`` processes sharing the port (uvicorn's supervisor restarts a worker that dies).

    The settings are written to ``settings_file`` and passed to the workers by :data:`ENV_SETTINGS`. More than one
    worker needs a database server: SQLite is refused (:class:`InvalidInput`).
    """
    import uvicorn

    if workers < 1:
        raise InvalidInput("--workers must be 1 or more")
    if workers > 1 and is_sqlite(settings.db_url):
        raise InvalidInput("SQLite is the single-worker embedded database: --workers above 1 needs PostgreSQL "
                           "(--db postgresql+psycopg://HOST/DB)")
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings_to_json(settings)))
    os.environ[ENV_SETTINGS] = str(settings_file)
    uvicorn.run("bank.asgi:create_app", factory=True, host=host, port=port, workers=workers, log_level="info",
                lifespan="on")
