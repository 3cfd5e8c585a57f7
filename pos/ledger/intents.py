"""The open-intents table and its in-memory view.

The table is derived from the entries (kept in step in the same transaction, checked by verify): intents not yet
closed, so a tap finds them in O(1). The view is the table as this connection last saw it, good while no other
connection commits (``PRAGMA data_version``): a tap then asks memory, not the database. Changes of an open
transaction wait until commit before they reach the view, and are dropped on rollback.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from pos.ledger.model import CLOSING_KINDS, OpenIntent


class OpenIntents:
    """One connection's open-intents table and view."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._view: dict[int, OpenIntent] | None = None
        self._version = -1
        self._pending: list[tuple[str, int, OpenIntent | None]] = []

    def track(self, seq: int, time: str, kind: str, wallet_id: str | None, counter: int | None, amount_fen: int,
              data: dict[str, Any]) -> None:
        """Keep the table in step with an entry just appended, inside its transaction."""
        if kind == "intent":
            self._conn.execute("INSERT INTO open_intents (seq, challenge, amount_fen, owner, created) "
                               "VALUES (?, ?, ?, ?, ?)", (seq, data["challenge"], amount_fen, data["owner"], time))
            self._pending.append(("put", seq, OpenIntent(seq, bytes.fromhex(data["challenge"]), amount_fen,
                                                         None, None, data["owner"], time)))
        elif kind == "torn":
            self._conn.execute("UPDATE open_intents SET wallet_id = ?, counter = ? WHERE seq = ?",
                               (wallet_id, counter, data["intent"]))
            known = self._view.get(data["intent"]) if self._view is not None else None
            self._pending.append(("torn", data["intent"], known and replace(known, wallet_id=wallet_id,
                                                                            counter=counter)))
        elif kind in CLOSING_KINDS and "intent" in data:
            self._conn.execute("DELETE FROM open_intents WHERE seq = ?", (data["intent"],))
            self._pending.append(("close", data["intent"], None))

    def committed(self) -> None:
        """The transaction committed: its changes reach the view."""
        changes, self._pending = self._pending, []
        if self._view is not None:
            for op, seq, intent in changes:
                if op == "put":
                    self._view[seq] = intent  # type: ignore[assignment]
                elif op == "torn" and seq in self._view:
                    self._view[seq] = intent or self._view[seq]
                else:
                    self._view.pop(seq, None)

    def rolled_back(self) -> None:
        """The transaction rolled back: its changes are forgotten."""
        self._pending.clear()

    def current(self, wallet_id: str | None = None) -> list[OpenIntent]:
        """Open intents, oldest first; with ``wallet_id``, those torn on that wallet. Read from memory while no other
        connection has committed since this one last read the table (one ``PRAGMA data_version``, no table read);
        inside a transaction, from the table."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if self._conn.in_transaction:
            intents = self._read()
        else:
            if self._view is None or version != self._version:
                self._view = self._read()
                self._version = version
            intents = self._view
        return [i for i in intents.values() if wallet_id is None or i.wallet_id == wallet_id]

    def _read(self) -> dict[int, OpenIntent]:
        rows = self._conn.execute("SELECT seq, challenge, amount_fen, wallet_id, counter, owner, created "
                                  "FROM open_intents ORDER BY seq")
        return {r[0]: OpenIntent(r[0], bytes.fromhex(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows}
