"""Settlement of a batch: parse, answer re-uploads from what is on file, verify, then judge and commit.

Settlement trusts nothing the terminal says. Per voucher: canonical decoding, payee (merchant and terminal) equal to
the authenticated uploader (:mod:`bank.parse`), certificate chain to the operator root valid at the voucher's time,
the certificate naming the voucher's wallet, the card's signature, the tier's single limit and the offline single
cap (:mod:`bank.verify`). Then, inside one transaction per batch, the double-spend rules and the daily limit
(:mod:`bank.double_spend`, :mod:`bank.commit`). A voucher's day and its ``review_timestamp`` flag follow the time
rules of :mod:`bank.timerules` (its timestamp alone never rejects it). The discount claims of the settled vouchers
are judged last, in the same transaction (:mod:`bank.claims`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bank import claims, sql, timerules
from bank.auth import Authenticator, TerminalRecord
from bank.clock import now_ms
from bank.commit import Attempt, commit_batch
from bank.parse import Judged, parse
from bank.reasons import FUTURE_TIMESTAMP
from bank.store import Store
from bank.verify import Verifier
from wire.batch import MAX_BATCH, UploadItem
from wire.errors import BadRequest


class Settlement:
    """Settles batches exactly once per voucher, any number of times per batch."""

    def __init__(self, store: Store, auth: Authenticator, verifier: Verifier, fee_bps: int,
                 fault: str | None) -> None:
        self.store = store
        self.auth = auth
        self.verifier = verifier
        self.fee_bps = fee_bps
        self.fault = fault
        self._lock = threading.Lock()

    def settle(self, terminal: TerminalRecord, items: Sequence[UploadItem]) -> list[dict[str, Any]]:
        """Judge and settle a batch; one answer per item, in order (:class:`wire.models.VoucherAnswer` as JSON)."""
        if len(items) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} vouchers per batch")
        # One batch at a time is judged and written (its verification threads have the cores to themselves, and
        # its Python work does not fight another batch's for the GIL); the next one starts while this one's
        # transaction commits, which waits on the disk with the GIL released.
        held = [self._lock]

        def release() -> None:
            if held:
                held.pop().release()

        self._lock.acquire()
        try:
            judged = self.check(terminal, items)
            candidates = [j for j in judged if j.status is None]
            attempt = Attempt(now_ms())
            self.store.write(self.commit, terminal, judged, candidates, [i.voucher for i in items], attempt,
                             before_commit=release, on_reconnect=attempt.reconnected)
        finally:
            release()
        return [j.answer() for j in judged]

    def check(self, terminal: TerminalRecord, items: Sequence[UploadItem]) -> list[Judged]:
        """Everything before the transaction: parse, answer re-uploads from the books, verify."""
        judged = [parse(i, item, terminal) for i, item in enumerate(items)]
        for j, item in zip(judged, items):
            if item.claim is not None:  # a discounted payment: judged after the vouchers (bank.claims)
                j.claim = item.claim
        timerules.apply(judged, terminal, now_ms())
        open_ = [j for j in judged if j.status is None]
        self._prior_answers(terminal, open_)
        self.verifier.verify_all([j for j in open_ if j.status is None], items)
        claims.check_signatures(self.store, terminal, [j for j in open_ if j.status is None and j.claim is not None])
        return judged

    def commit(self, conn: Any, terminal: TerminalRecord, judged: list[Judged], candidates: list[Judged],
               raw: list[bytes], attempt: Attempt | None = None) -> None:
        """Judge and write ``candidates`` in the caller's transaction (see :func:`bank.commit.commit_batch`)."""
        attempt = attempt or Attempt(now_ms())
        t = attempt.t

        def after_vouchers() -> None:
            timerules.record(conn, terminal, judged, t)
            claims.settle_claims(conn, terminal, judged, t)

        commit_batch(conn, terminal, judged, candidates, raw, fee_bps=self.fee_bps,
                     remember_nonce=self.auth.remember_nonce, fault=self.fault, attempt=attempt,
                     before_faults=after_vouchers)

    def _prior_answers(self, terminal: TerminalRecord, open_: list[Judged]) -> None:
        """Answer re-uploads from what is on file: same settled body -> duplicate; same rejected bytes -> same."""
        if not open_:
            return

        def look(conn: Any) -> tuple[list[Any], list[Any]]:
            return (sql.select_in(conn, "settled_bodies", sql.settled_bodies, [j.voucher_id for j in open_]),
                    sql.select_in(conn, "prior_rejections", sql.prior_rejections, [j.vhash for j in open_],
                                  terminal_id=terminal.terminal_id))

        settled, rejected = self.store.read(look)
        bodies = dict(settled)
        reasons = dict(rejected)
        for j in open_:
            if bodies.get(j.voucher_id) == j.body_hash:
                j.status = "duplicate"
            elif reasons.get(j.vhash) == FUTURE_TIMESTAMP:
                j.refiled = True  # no longer a final rejection (bank.timerules): judged again
            elif j.vhash in reasons:
                j.status, j.reason = "rejected", reasons[j.vhash]
