"""Store-and-forward settlement: the terminal's outbox goes to the operator; answers come back as ledger entries.

Delivery is at least once (a batch is re-sent after any failure: timeout, 500, cut-off answer, operator restart);
settlement is exactly once (the operator answers a re-sent voucher ``duplicate``). Batches go up in the binary batch
format (:mod:`wire.batch`). The first batch goes alone; once it is answered, two are in flight: the next batch is
encoded and sent while the operator judges the one before and this thread records answers. Answers are recorded in
upload order, each batch's in one transaction, one ``settlement`` entry per voucher; a voucher already answered is
never answered twice, so two syncs racing on one terminal are harmless. After a failed batch nothing later is
recorded (what the operator settled of it is answered ``duplicate`` next time). Then the denylist changes since the
terminal's version are recorded and one ``sync`` entry closes the run.

API for the UI and the CLI: :func:`sync_once`, :func:`request_refund`, :func:`reconcile`, :class:`SyncLoop`.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from pos.home import Home
from pos.ledger.store import Entry, Ledger
from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy
from wallet.card import CHINA_TZ, china_day_text
from wallet.errors import EcnyError, InvalidInput
from wallet.voucher import Voucher
from wire.batch import encode_batch

BATCH_SIZE = 500
PIPELINE_DEPTH = 2  # batches in flight once the first one is answered
SETTLED_STATUSES = ("settled", "duplicate")


class SyncError(EcnyError):
    """The operator's answer cannot be matched to what was uploaded (nothing of that batch is recorded)."""


class RefundRefused(EcnyError):
    """The voucher cannot be refunded from this terminal (unknown here, or not settled)."""


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """How far a sync is: vouchers answered so far, and the count and amount still to go."""

    done: int
    total: int
    left_count: int
    left_fen: int


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class SyncResult:
    """What one sync did."""

    terminal_id: str
    uploaded: int = 0
    settled: int = 0
    duplicate: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    denylist_version: int = 0
    pending: int = 0
    pending_fen: int = 0
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``pos sync --json`` shape."""
        return {"terminal_id": self.terminal_id, "uploaded": self.uploaded, "settled": self.settled,
                "duplicate": self.duplicate, "rejected": self.rejected, "denylist_version": self.denylist_version,
                "pending": self.pending, "pending_fen": self.pending_fen}


def _client(home: Home, terminal_id: str, operator_url: str | None, client: OperatorClient | None,
            transport: httpx.BaseTransport | None, retry: RetryPolicy | None) -> tuple[OperatorClient, bool]:
    if client is not None:
        return client, False
    return OperatorClient.for_terminal(home, terminal_id, operator_url, transport=transport, retry=retry), True


def sync_once(home: Home, terminal_id: str, operator_url: str | None = None,
              progress: ProgressCallback | None = None, *, client: OperatorClient | None = None,
              transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
              batch_size: int = BATCH_SIZE, depth: int = PIPELINE_DEPTH) -> SyncResult:
    """Upload the outbox in batches, record every answer and the denylist changes; return the counts.

    ``depth`` batches are in flight at once after the first (1: one after the other). Raises
    :class:`~pos.sync.client.OperatorUnavailable` when the operator stays unreachable (batches answered before
    that are recorded; the rest stays in the outbox for the next sync).
    """
    t0 = time.perf_counter()
    result = SyncResult(terminal_id)
    cli, own = _client(home, terminal_id, operator_url, client, transport, retry)
    try:
        with home.ledger(terminal_id) as ledger:
            outbox = ledger.outbox()
            total, left_fen = len(outbox), sum(e.amount_fen for e in outbox)
            if progress:
                progress(SyncProgress(0, total, total, left_fen))
            certs: dict[str, bytes] = {}
            chunks = [outbox[i:i + batch_size] for i in range(0, total, batch_size)]
            done = 0
            for chunk, answer in upload_batches(cli, chunks, lambda c: _batch(ledger, c, certs), depth):
                _record(ledger, chunk, answer.get("results"), result)
                left_fen -= sum(e.amount_fen for e in chunk)
                done += len(chunk)
                if progress:
                    progress(SyncProgress(done, total, total - done, left_fen))
            d = cli.denylist(ledger.denylist_version())
            if d.get("added") or d.get("removed"):
                ledger.apply_denylist(int(d["version"]), list(d.get("added", [])), list(d.get("removed", [])))
            status = ledger.sync_status()
            result.denylist_version, result.pending, result.pending_fen = (status.denylist_version,
                                                                           status.pending_count, status.pending_fen)
            ledger.append("sync", data={"uploaded": result.uploaded, "settled": result.settled,
                                        "duplicate": result.duplicate, "rejected": len(result.rejected),
                                        "denylist_version": result.denylist_version, "pending": result.pending})
    finally:
        if own:
            cli.close()
    result.elapsed_s = time.perf_counter() - t0
    return result


def _batch(ledger: Ledger, chunk: list[Entry], certs: dict[str, bytes]) -> bytes:
    """The binary batch of ``chunk``: each certificate once (``certs`` caches them by fingerprint across batches)."""
    index: dict[str, int] = {}
    ders: list[bytes] = []
    vouchers: list[tuple[bytes, int, int]] = []
    for e in chunk:
        data = e.data
        for fp in (data["cert"], data["issuer"]):
            if fp not in index:
                der = certs.get(fp)
                if der is None:
                    der = ledger.certificate(fp)
                    if der is None:
                        raise SyncError(f"ledger lacks certificate {fp} of payment {e.voucher_id}")
                    certs[fp] = der
                index[fp] = len(ders)
                ders.append(der)
        vouchers.append((bytes.fromhex(data["voucher"]), index[data["cert"]], index[data["issuer"]]))
    return encode_batch(ders, vouchers)


def upload_batches(cli: OperatorClient, chunks: Sequence[list[Entry]], encode: Callable[[list[Entry]], bytes],
                   depth: int = PIPELINE_DEPTH) -> Iterator[tuple[list[Entry], dict[str, Any]]]:
    """Each chunk with the operator's answer to it, in order: the first chunk alone, then ``depth`` in flight.

    ``encode`` runs on the calling thread (it may read the ledger); only the requests run on helper threads. The
    first failure is raised once the requests already in flight have ended (they stop retrying); none of their
    answers is yielded after it. Settlement is idempotent by voucher id, so a batch the operator settled but whose
    answer is dropped here is answered ``duplicate`` when it goes up again.
    """
    if not chunks:
        return
    yield chunks[0], cli.settle_batch(encode(chunks[0]))
    if depth <= 1 or len(chunks) == 1:
        for chunk in chunks[1:]:
            yield chunk, cli.settle_batch(encode(chunk))
        return
    cancel = threading.Event()
    rest = iter(chunks[1:])
    in_flight: deque[tuple[list[Entry], Future[dict[str, Any]]]] = deque()
    with ThreadPoolExecutor(depth, thread_name_prefix="sync-upload") as pool:

        def send() -> None:
            chunk = next(rest, None)
            if chunk is not None:
                in_flight.append((chunk, pool.submit(cli.settle_batch, encode(chunk), cancel=cancel)))

        try:
            for _ in range(depth):
                send()
            while in_flight:
                chunk, future = in_flight.popleft()
                answer = future.result()
                send()
                yield chunk, answer
        finally:
            cancel.set()  # on a failure (or the caller stopping early): no new attempts; running ones end
            for _, future in in_flight:
                future.cancel()


def _record(ledger: Ledger, chunk: list[Entry], results: Any, result: SyncResult) -> None:
    """Write one settlement entry per answered voucher, in one transaction, skipping any already answered."""
    if not isinstance(results, list) or len(results) != len(chunk):
        raise SyncError("the operator's answer does not list one result per uploaded voucher")
    for e, r in zip(chunk, results):
        if not isinstance(r, dict) or r.get("status") not in ("settled", "duplicate", "rejected") or (
                r.get("voucher_id") not in (e.voucher_id, None)):
            raise SyncError(f"the operator's answer for {e.voucher_id} does not match the upload")
    ledger.begin()
    try:
        marks = ",".join("?" * len(chunk))
        done = {row[0] for row in ledger.conn.execute(
            f"SELECT voucher_id FROM entries WHERE kind = 'settlement' AND voucher_id IN ({marks})",
            [e.voucher_id for e in chunk])}
        for e, r in zip(chunk, results):
            if e.voucher_id in done:
                continue
            ledger._append("settlement", voucher_id=e.voucher_id, wallet_id=e.wallet_id, counter=e.counter,
                           amount_fen=e.amount_fen, data={"status": r["status"], "reason": r.get("reason")})
        ledger.commit()
    except BaseException:
        ledger.rollback()
        raise
    result.uploaded += len(chunk)
    for e, r in zip(chunk, results):
        if r["status"] == "settled":
            result.settled += 1
        elif r["status"] == "duplicate":
            result.duplicate += 1
        else:
            result.rejected.append({"voucher_id": e.voucher_id, "reason": r.get("reason")})


# -- refunds --------------------------------------------------------------------------------------------------------
def _settlement_of(ledger: Ledger, voucher_id: str) -> dict[str, Any] | None:
    """The data of the latest settlement entry for ``voucher_id``, or None."""
    row = ledger.conn.execute("SELECT data FROM entries WHERE kind = 'settlement' AND voucher_id = ? "
                              "ORDER BY seq DESC LIMIT 1", (voucher_id,)).fetchone()
    return json.loads(row[0]) if row else None


def request_refund(home: Home, terminal_id: str, voucher_id: str, amount_fen: int | None = None,
                   operator_url: str | None = None, *, client: OperatorClient | None = None,
                   transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None) -> dict[str, Any]:
    """Ask the operator to refund ``amount_fen`` (default: all that is left) of a voucher paid at this terminal.

    The refund id is derived from (terminal, voucher, number of refunds already recorded here), so repeating a
    refund after a crash or a lost answer returns the first result instead of refunding twice. The operator never
    refunds more than the original in total. Records one ``refund`` ledger entry.
    """
    if amount_fen is not None and amount_fen <= 0:
        raise InvalidInput("refund amount must be positive")
    cli, own = _client(home, terminal_id, operator_url, client, transport, retry)
    try:
        with home.ledger(terminal_id) as ledger:
            payment = ledger.payment(voucher_id)
            if payment is None:
                raise InvalidInput(f"no payment {voucher_id} at terminal {terminal_id}")
            if _settlement_of(ledger, voucher_id) is None:
                sync_once(home, terminal_id, client=cli)
            settlement = _settlement_of(ledger, voucher_id)
            if settlement is None or settlement.get("status") not in SETTLED_STATUSES:
                why = "not settled yet" if settlement is None else f"rejected ({settlement.get('reason')})"
                raise RefundRefused(f"voucher {voucher_id} cannot be refunded: {why}")
            refund_id = f"{terminal_id}-{voucher_id}-R{ledger.refund_count(voucher_id) + 1}"
            answer = cli.refund(refund_id, voucher_id, amount_fen)
            ledger.append("refund", voucher_id=voucher_id, wallet_id=payment.wallet_id, counter=payment.counter,
                          amount_fen=int(answer["amount_fen"]),
                          data={"refund_id": refund_id, "refunded_total_fen": answer["refunded_total_fen"],
                                "remaining_fen": answer["remaining_fen"], "day": answer["day"],
                                "created_ms": answer["created_ms"]})
    finally:
        if own:
            cli.close()
    return {"terminal_id": terminal_id, **answer}


# -- reconciliation -------------------------------------------------------------------------------------------------
def today() -> str:
    """Today in China Standard Time (the business day of reports)."""
    return dt.datetime.now(CHINA_TZ).date().isoformat()


def _voucher_day(e: Entry) -> str:
    return china_day_text(Voucher.decode(bytes.fromhex(e.data["voucher"])).body.timestamp_ms)


def terminal_report(ledger: Ledger, day: str) -> tuple[dict[str, Any], dict[str, tuple[int, str]],
                                                      dict[str, int]]:
    """The terminal's own end-of-day report from its ledger, with per-voucher and per-refund detail."""
    status: dict[str, tuple[str, str | None]] = {}
    for e in ledger.entries(kind="settlement"):
        status[e.voucher_id or ""] = (e.data.get("status", ""), e.data.get("reason"))
    vouchers: dict[str, tuple[int, str]] = {}
    for e in ledger.entries(kind="payment"):
        if _voucher_day(e) != day:
            continue
        s, reason = status.get(e.voucher_id or "", ("pending", None))
        label = "settled" if s in SETTLED_STATUSES else "pending" if s == "pending" else f"rejected:{reason}"
        vouchers[e.voucher_id or ""] = (e.amount_fen, label)
    refunds = {e.data["refund_id"]: e.amount_fen for e in ledger.entries(kind="refund") if e.data.get("day") == day}
    reasons: dict[str, int] = defaultdict(int)
    for _, label in vouchers.values():
        if label.startswith("rejected:"):
            reasons[label.split(":", 1)[1]] += 1

    def part(pred: Callable[[str], bool]) -> dict[str, int]:
        sel = [a for a, s in vouchers.values() if pred(s)]
        return {"count": len(sel), "total_fen": sum(sel)}

    report = {
        "count": len(vouchers), "total_fen": sum(a for a, _ in vouchers.values()),
        "settled": part(lambda s: s == "settled"),
        "rejected": {**part(lambda s: s.startswith("rejected:")), "reasons": dict(reasons)},
        "pending": part(lambda s: s == "pending"),
        "refunds": {"count": len(refunds), "total_fen": sum(refunds.values())},
    }
    return report, vouchers, refunds


def reconcile(home: Home, terminal_id: str, day: str | None = None, operator_url: str | None = None, *,
              client: OperatorClient | None = None, transport: httpx.BaseTransport | None = None,
              retry: RetryPolicy | None = None) -> dict[str, Any]:
    """Compare the terminal's end-of-day report with the operator's settlement report (the ``pos report`` object).

    ``matches`` is true only when every voucher has the same amount and outcome on both sides (a voucher still in
    the outbox is a difference: it is not settled yet) and the refunds agree.
    """
    day = day or today()
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise InvalidInput(f"date {day!r} is not YYYY-MM-DD") from None
    cli, own = _client(home, terminal_id, operator_url, client, transport, retry)
    try:
        with home.ledger(terminal_id) as ledger:
            mine, my_vouchers, my_refunds = terminal_report(ledger, day)
        theirs = cli.report(day)
    finally:
        if own:
            cli.close()
    op_vouchers: dict[str, tuple[int, str]] = {}
    differences: list[dict[str, Any]] = []
    for vid, amount, label in theirs.get("vouchers", []):
        if vid is None:
            differences.append({"voucher_id": None, "field": "status", "terminal": None, "operator": label,
                                "note": "the operator rejected an upload that does not parse"})
            continue
        if vid in op_vouchers and op_vouchers[vid][1] == "settled":
            continue
        op_vouchers[vid] = (int(amount), label)
    for vid in sorted(set(my_vouchers) | set(op_vouchers)):
        t_amount, t_label = my_vouchers.get(vid, (None, "missing"))
        o_amount, o_label = op_vouchers.get(vid, (None, "missing"))
        if t_label != o_label:
            note = {("pending", "missing"): "not uploaded yet: run pos sync",
                    ("pending", "settled"): "settled by the operator but not recorded here: run pos sync",
                    ("missing", "settled"): "settled by the operator but absent from this ledger"}.get(
                (t_label, o_label), "outcomes differ")
            differences.append({"voucher_id": vid, "field": "status", "terminal": t_label, "operator": o_label,
                                "note": note})
        elif t_amount != o_amount:
            differences.append({"voucher_id": vid, "field": "amount_fen", "terminal": t_amount,
                                "operator": o_amount, "note": "amounts differ"})
    op_refunds = {rid: int(a) for rid, _, a in theirs.get("refund_list", [])}
    for rid in sorted(set(my_refunds) | set(op_refunds)):
        if my_refunds.get(rid) != op_refunds.get(rid):
            differences.append({"refund_id": rid, "field": "refund", "terminal": my_refunds.get(rid),
                                "operator": op_refunds.get(rid), "note": "refunds differ"})
    operator = {k: theirs[k] for k in ("count", "total_fen", "settled", "rejected", "refunds") if k in theirs}
    return {"terminal_id": terminal_id, "date": day, "terminal": mine, "operator": operator,
            "matches": not differences, "differences": differences}


# -- the background loop --------------------------------------------------------------------------------------------
class SyncLoop:
    """Syncs one terminal in a daemon thread every ``interval`` seconds; after failures it backs off exponentially
    with jitter (up to ``max_backoff``). ``trigger()`` syncs now; ``stop()`` ends the thread.

    Callbacks run in the loop's thread: ``on_result(SyncResult)``, ``on_error(Exception)``, ``progress``.
    """

    def __init__(self, home: Home, terminal_id: str, operator_url: str | None = None, *, interval: float = 30.0,
                 max_backoff: float = 300.0, progress: ProgressCallback | None = None,
                 on_result: Callable[[SyncResult], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.home, self.terminal_id, self.operator_url = home, terminal_id, operator_url
        self.interval, self.max_backoff = interval, max_backoff
        self.progress, self.on_result, self.on_error, self.transport = progress, on_result, on_error, transport
        self.failures = 0
        self.last_result: SyncResult | None = None
        self.last_error: Exception | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SyncLoop:
        self._thread = threading.Thread(target=self._run, name=f"sync:{self.terminal_id}", daemon=True)
        self._thread.start()
        return self

    def trigger(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def next_delay(self) -> float:
        if not self.failures:
            return self.interval
        return min(self.max_backoff, 2.0 ** self.failures) * random.uniform(0.5, 1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last_result = sync_once(self.home, self.terminal_id, self.operator_url, self.progress,
                                             transport=self.transport, retry=RetryPolicy(attempts=2))
                self.failures, self.last_error = 0, None
                if self.on_result:
                    self.on_result(self.last_result)
            except (EcnyError, OSError) as exc:
                self.failures += 1
                self.last_error = exc
                if self.on_error:
                    self.on_error(exc)
            self._wake.wait(self.next_delay())
            self._wake.clear()


__all__ = ["OperatorUnavailable", "RefundRefused", "SyncError", "SyncLoop", "SyncProgress", "SyncResult",
           "reconcile", "request_refund", "sync_once"]
