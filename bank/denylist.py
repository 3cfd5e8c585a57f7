"""The denylist: revoked wallets, versioned so a terminal fetches only the changes since its version."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, func, insert, select

from bank.schema import denylist, read_only
from wire.errors import BadRequest
from wire.models import DenylistAnswer


def add(conn: Connection, wallet_id: str, reason: str, t: int) -> None:
    """Put ``wallet_id`` on the denylist under the next version, in the caller's transaction."""
    version = (conn.execute(select(func.max(denylist.c.version))).scalar() or 0) + 1
    conn.execute(insert(denylist).values(version=version, wallet_id=wallet_id, action="add", reason=reason,
                                         created_ms=t))


def version(engine: Engine) -> int:
    """The current denylist version (0 when empty)."""
    with read_only(engine) as conn:
        return conn.execute(select(func.max(denylist.c.version))).scalar() or 0


def since(engine: Engine, since: int) -> DenylistAnswer:
    """Denylist changes after version ``since``: the wallets added and removed, and the current version."""
    if since < 0:
        raise BadRequest("since must be 0 or more")
    with read_only(engine) as conn:
        rows = conn.execute(select(denylist.c.version, denylist.c.wallet_id, denylist.c.action)
                            .where(denylist.c.version > since).order_by(denylist.c.version)).all()
        current = conn.execute(select(func.max(denylist.c.version))).scalar() or 0
    state: dict[str, str] = {}
    for _, wid, action in rows:
        state[wid] = action
    return DenylistAnswer(version=max(current, since) if rows else current, since=since,
                          added=sorted(w for w, a in state.items() if a == "add"),
                          removed=sorted(w for w, a in state.items() if a == "remove"))
