"""The ledger's store-and-forward side: the outbox, settlement answers, refunds, the denylist and sync status.

A mixin of :class:`pos.ledger.Ledger` (it reads the ledger's connection and writes through its transactions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import TYPE_CHECKING

from pos.ledger.model import COLS, Entry, SyncStatus, row_entry

if TYPE_CHECKING:
    from pos.ledger.transaction import Transaction


class SettlementQueries:
    """Outbox, settlement, refund, denylist and sync-status queries over the ledger's entries."""

    _conn: sqlite3.Connection

    def transaction(self) -> Transaction:  # provided by the Ledger
        raise NotImplementedError

    def outbox(self, limit: int | None = None) -> list[Entry]:
        """Payments not yet answered by the operator (no ``settlement`` entry): what sync must upload."""
        sql = f"""SELECT {COLS} FROM entries p WHERE p.kind = 'payment' AND NOT EXISTS
                  (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)
                  ORDER BY p.seq"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row_entry(r) for r in self._conn.execute(sql)]

    def outbox_page(self, after_seq: int, through_seq: int, limit: int) -> list[Entry]:
        """The outbox's payments with ``after_seq < seq <= through_seq``, at most ``limit``, in seq order: a sync
        reads its outbox page by page (its memory does not grow with the outbox)."""
        sql = f"""SELECT {COLS} FROM entries p WHERE p.kind = 'payment' AND p.seq > ? AND p.seq <= ? AND NOT EXISTS
                  (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)
                  ORDER BY p.seq LIMIT ?"""
        return [row_entry(r) for r in self._conn.execute(sql, (after_seq, through_seq, int(limit)))]

    def outbox_totals(self, through_seq: int) -> tuple[int, int]:
        """How many payments up to ``through_seq`` the outbox holds, and their amount (fen)."""
        row = self._conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM entries p WHERE p.kind = 'payment' AND p.seq <= ?
               AND NOT EXISTS (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)""",
            (through_seq,)).fetchone()
        return int(row[0]), int(row[1])

    def answered(self, voucher_ids: Collection[str | None]) -> set[str]:
        """Of ``voucher_ids``, those with a ``settlement`` entry. Inside a transaction this reads under the write
        lock, so a check-then-append there cannot race another writer."""
        ids = list(voucher_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        return {row[0] for row in self._conn.execute(
            f"SELECT voucher_id FROM entries WHERE kind = 'settlement' AND voucher_id IN ({marks})", ids)}

    def latest_settlement(self, voucher_id: str) -> Entry | None:
        """The latest ``settlement`` entry for ``voucher_id``, or None."""
        row = self._conn.execute(f"SELECT {COLS} FROM entries WHERE kind = 'settlement' AND voucher_id = ? "
                                 "ORDER BY seq DESC LIMIT 1", (voucher_id,)).fetchone()
        return row_entry(row) if row else None

    def refund_count(self, voucher_id: str) -> int:
        """How many refunds of the voucher this terminal has recorded."""
        return self._conn.execute("SELECT COUNT(*) FROM entries WHERE kind = 'refund' AND voucher_id = ?",
                                  (voucher_id,)).fetchone()[0]

    def denylist_version(self) -> int:
        """The highest denylist version recorded (0 if none)."""
        row = self._conn.execute(
            "SELECT MAX(CAST(json_extract(data, '$.version') AS INTEGER)) FROM entries WHERE kind = 'denylist'"
        ).fetchone()
        return row[0] or 0

    def denylist_history(self) -> list[tuple[int, int]]:
        """The denylist versions recorded, as (seq of the entry, version) in ledger order."""
        return sorted((seq, int(v or 0)) for seq, v in self._conn.execute(  # through entries_denylist (no ORDER BY)
            "SELECT seq, json_extract(data, '$.version') FROM entries WHERE kind = 'denylist'"))

    def unresolved(self) -> list[Entry]:
        """The ``unresolved`` entries (intents closed without a voucher, for the operator), oldest first."""
        return [row_entry(r) for r in self._conn.execute(
            f"SELECT {COLS} FROM entries WHERE kind = 'unresolved' ORDER BY seq")]

    def apply_denylist(self, version: int, added: list[str], removed: Collection[str] = ()) -> None:
        """Record a denylist change as entries (one per wallet), all in one transaction."""
        with self.transaction() as tx:
            for w in added:
                tx.append("denylist", wallet_id=w, data={"version": version, "action": "add"})
            for w in removed:
                tx.append("denylist", wallet_id=w, data={"version": version, "action": "remove"})

    # -- instant discounts (pos.payment.discounts, pos.sync.campaigns) ---------------------------------------------
    def last_seq(self) -> int:
        """The seq of the newest entry (0 for an empty ledger)."""
        return self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0]

    def latest_campaigns(self) -> Entry | None:
        """The newest ``campaigns`` entry: the campaigns and offline shares the last sync brought."""
        row = self._conn.execute(f"SELECT {COLS} FROM entries WHERE kind = 'campaigns' ORDER BY seq DESC LIMIT 1"
                                 ).fetchone()
        return row_entry(row) if row else None

    def discounts_since(self, seq: int) -> dict[str, int]:
        """{campaign id: fen} of the discounts of the payments recorded after ``seq`` and of the open intents (a torn
        or interrupted charge may yet turn out paid)."""
        pick = ("SELECT json_extract(data, '$.discount.campaign_id'), json_extract(data, '$.discount.discount_fen') "
                "FROM entries WHERE ")
        out: dict[str, int] = {}
        for cid, fen in self._conn.execute(
                f"{pick}seq > ?1 AND kind = 'payment' AND json_extract(data, '$.discount') IS NOT NULL UNION ALL "
                f"{pick}seq IN (SELECT seq FROM open_intents) AND json_extract(data, '$.discount') IS NOT NULL",
                (seq,)):
            if cid is not None:
                out[cid] = out.get(cid, 0) + int(fen)
        return out

    def sync_status(self) -> SyncStatus:
        """What the status bar shows: vouchers and money waiting for settlement, last sync, denylist version."""
        pending = self._conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM entries p WHERE p.kind = 'payment' AND NOT EXISTS
               (SELECT 1 FROM entries s WHERE s.kind = 'settlement' AND s.voucher_id = p.voucher_id)""").fetchone()
        last = self._conn.execute("SELECT time FROM entries WHERE kind = 'sync' ORDER BY seq DESC LIMIT 1").fetchone()
        return SyncStatus(pending[0], pending[1], last[0] if last else None, self.denylist_version())
