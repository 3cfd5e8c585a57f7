"""Store-and-forward settlement: the terminal's outbox goes to the operator; answers come back as ledger entries.

Delivery is at least once (a batch is re-sent after any failure: timeout, 500, cut-off answer, operator restart);
settlement is exactly once (the operator answers a re-sent voucher ``duplicate``). Batches go up in the binary batch
format (:mod:`wire.batch`). The first batch goes alone; once it is answered, two are in flight: the next batch is
encoded and sent while the operator judges the one before and this thread records answers. Answers are recorded in
upload order, each batch's in one transaction, one ``settlement`` entry per voucher; a voucher already answered is
never answered twice, so two syncs racing on one terminal are harmless. After a failed batch nothing later is
recorded (what the operator settled of it is answered ``duplicate`` next time). Then the denylist changes since the
terminal's version are recorded, then the campaigns and offline shares of instant discounts
(:mod:`pos.sync.campaigns`, whose claims go up with the vouchers), and one ``sync`` entry closes the run.

An answer may carry a ``flag`` (``review_timestamp``: the voucher's time was off, see docs/operator.md "Time"): the
voucher is recorded settled or rejected as its status says, never uploaded again. Every sync keeps the clock offset
the client learnt from the operator's answers (:mod:`pos.sync.clockskew`), even when the sync fails; an offset over
the window also goes into each settlement entry as the voucher's corrected ``day`` (the one the operator counts it
in).

Nothing is uploaded from a ledger that fails verification (:meth:`pos.ledger.Ledger.check`, incremental: only the
entries after its verified checkpoint are re-hashed).

Refunds are :mod:`pos.sync.refunds`, end-of-day reports and reconciliation :mod:`pos.sync.reports`, the background
loop :mod:`pos.sync.loop`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from pos.gate.online_tickets import sync_gate
from pos.home import Home
from pos.ledger import Entry, Ledger
from pos.sync import campaigns as campaign_sync
from pos.sync import clockskew
from pos.sync.client import OperatorClient, OperatorRefused, OperatorUnavailable, RetryPolicy
from wallet.errors import EcnyError
from wallet.voucher import Voucher
from wire.batch import encode_batch
from wire.models import SettlementAnswer

BATCH_SIZE = 500
PIPELINE_DEPTH = 2  # batches in flight once the first one is answered
PAGE_BATCHES = 20  # batches of the outbox read from the ledger at a time (a sync's memory does not grow with it)
SETTLED_STATUSES = ("settled", "duplicate")


class SyncError(EcnyError):
    """The operator's answer cannot be matched to what was uploaded (nothing of that batch is recorded)."""


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
    flagged: list[dict[str, Any]] = field(default_factory=list)  # settled or rejected, timestamp to review
    clock_ahead_ms: int | None = None  # the terminal's clock against the operator's, learnt by this sync
    unresolved: int | None = None  # items reported unresolved to the operator (None: no report was needed)
    online_tickets: dict[str, Any] | None = None  # a gate's ticket sync (pos.gate.online_tickets.sync_gate)
    claims: list[dict[str, Any]] = field(default_factory=list)  # discount claims answered (pos.sync.campaigns)
    campaigns: int = 0  # campaigns the terminal applies from now on

    def to_json(self) -> dict[str, Any]:
        """The ``pos sync --json`` shape."""
        return {"terminal_id": self.terminal_id, "uploaded": self.uploaded, "settled": self.settled,
                "duplicate": self.duplicate, "rejected": self.rejected, "denylist_version": self.denylist_version,
                "pending": self.pending, "pending_fen": self.pending_fen, "flagged": self.flagged,
                "clock_ahead_ms": self.clock_ahead_ms, "unresolved": self.unresolved,
                "online_tickets": self.online_tickets, "claims": self.claims, "campaigns": self.campaigns}


def operator_client(home: Home, terminal_id: str, operator_url: str | None, client: OperatorClient | None,
                    transport: httpx.BaseTransport | None, retry: RetryPolicy | None) -> tuple[OperatorClient, bool]:
    """``client`` if given (the caller closes it), else a new client for the terminal (True: close it after use)."""
    if client is not None:
        return client, False
    return OperatorClient.for_terminal(home, terminal_id, operator_url, transport=transport, retry=retry), True


def sync_once(home: Home, terminal_id: str, operator_url: str | None = None,
              progress: ProgressCallback | None = None, *, client: OperatorClient | None = None,
              transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
              batch_size: int = BATCH_SIZE, depth: int = PIPELINE_DEPTH) -> SyncResult:
    """Upload the outbox in batches, record every answer and the denylist changes; return the counts.

    ``depth`` batches are in flight at once after the first (1: one after the other). The ledger is verified first
    (incrementally, :meth:`~pos.ledger.Ledger.check`): one that fails raises :class:`~pos.ledger.LedgerTampered`
    and nothing is uploaded. Raises :class:`~pos.sync.client.OperatorUnavailable` when the operator stays
    unreachable (batches answered before that are recorded; the rest stays in the outbox for the next sync).
    """
    t0 = time.perf_counter()
    result = SyncResult(terminal_id)
    cli, own = operator_client(home, terminal_id, operator_url, client, transport, retry)
    try:
        with home.ledger(terminal_id) as ledger:
            ledger.check()  # a ledger that fails verification uploads nothing (LedgerTampered says what to do)
            upload_seq = ledger.last_seq()  # the outbox up to here; later payments wait for the next sync and count
            # against the new campaign shares
            total, left_fen = ledger.outbox_totals(upload_seq)
            if progress:
                progress(SyncProgress(0, total, total, left_fen))
            certs: dict[str, bytes] = {}
            versions: dict[int, int] = {}
            done = 0
            for chunk, answer in upload_batches(cli, _outbox_chunks(ledger, upload_seq, batch_size, versions),
                                                lambda c: _batch(ledger, c, certs, cli), depth,
                                                lambda c: versions[c[0].seq]):
                offset = getattr(cli, "offset_ms", None)  # learnt from this answer: the clock it was judged by
                _record(ledger, chunk, answer.get("results"), result, -offset if isinstance(offset, int) else None)
                left_fen -= sum(e.amount_fen for e in chunk)
                done += len(chunk)
                if progress:
                    progress(SyncProgress(done, total, total - done, left_fen))
            d = cli.denylist(ledger.denylist_version())
            if d.get("added") or d.get("removed"):
                ledger.apply_denylist(int(d["version"]), list(d.get("added", [])), list(d.get("removed", [])))
            result.unresolved = _report_unresolved(home, terminal_id, ledger, cli)
            result.online_tickets = sync_gate(home, terminal_id, cli)  # a gate of a spot that sells online
            result.campaigns = campaign_sync.refresh(cli, ledger, upload_seq)
            status = ledger.sync_status()
            result.denylist_version, result.pending, result.pending_fen = (status.denylist_version,
                                                                           status.pending_count, status.pending_fen)
            ledger.append("sync", data={"uploaded": result.uploaded, "settled": result.settled,
                                        "duplicate": result.duplicate, "rejected": len(result.rejected),
                                        "denylist_version": result.denylist_version, "pending": result.pending})
    finally:
        result.clock_ahead_ms = remember_clock(home, terminal_id, cli)
        if own:
            cli.close()
    result.elapsed_s = time.perf_counter() - t0
    return result


def _outbox_chunks(ledger: Ledger, through_seq: int, batch_size: int, versions: dict[int, int],
                   ) -> Iterator[list[Entry]]:
    """The outbox up to ``through_seq`` in batches (:func:`known_versions`), read from the ledger
    ``PAGE_BATCHES`` batches at a time; each batch's denylist version goes into ``versions``."""
    after = 0
    while page := ledger.outbox_page(after, through_seq, batch_size * PAGE_BATCHES):
        after = page[-1].seq
        chunks, page_versions = known_versions(ledger, page, batch_size)
        versions.update(page_versions)
        yield from chunks


def known_versions(ledger: Ledger, outbox: list[Entry], batch_size: int = BATCH_SIZE,
                   ) -> tuple[list[list[Entry]], dict[int, int]]:
    """The outbox cut into batches of at most ``batch_size`` that were each taken under one denylist version, and
    that version by the seq of each batch's first payment. A payment was taken under the highest version recorded
    before its intent (its charge started before the tap: the version it was checked against is that one or a later
    one), so the declaration never says the terminal knew more than it did."""
    history = ledger.denylist_history()
    seqs, best, top = [s for s, _ in history], [], 0
    for _, v in history:
        top = max(top, v)
        best.append(top)

    def version(e: Entry) -> int:
        i = bisect.bisect_left(seqs, int(e.data.get("intent") or e.seq))
        return best[i - 1] if i else 0

    chunks: list[list[Entry]] = []
    versions: dict[int, int] = {}
    current = -1
    for e in outbox:
        v = version(e) if seqs else 0
        if v != current or len(chunks[-1]) >= batch_size:
            chunks.append([])
            versions[e.seq], current = v, v
        chunks[-1].append(e)
    return chunks, versions


def _report_unresolved(home: Home, terminal_id: str, ledger: Ledger, cli: OperatorClient) -> int | None:
    """Report what the terminal could not settle when that changed (:mod:`pos.sync.unresolved`): how many items
    went up, or None when nothing was sent. A refusal or an operator gone by now leaves it for the next sync."""
    from pos.sync.unresolved import report_unresolved  # (it reads the pay-sent marks of pos.payment)

    try:
        answer = report_unresolved(home, terminal_id, ledger, cli)
    except (OperatorRefused, OperatorUnavailable):
        return None
    return None if answer is None else len(answer["items"])


def remember_clock(home: Home, terminal_id: str, cli: OperatorClient) -> int | None:
    """Keep the clock offset the client learnt (even from a refused or failed request); how far ahead the
    terminal's clock is, or None when nothing was learnt."""
    offset, at = getattr(cli, "offset_ms", None), getattr(cli, "operator_ms", None)
    if not isinstance(offset, int) or not isinstance(at, int):  # nothing learnt (or a stand-in client)
        return None
    clockskew.save(home, terminal_id, clockskew.ClockState(offset, at))
    return -offset


def _batch(ledger: Ledger, chunk: list[Entry], certs: dict[str, bytes], cli: Any = None) -> bytes:
    """The binary batch of ``chunk``: each certificate once (``certs`` caches them by fingerprint across batches),
    with the discount claims of its discounted payments, signed with ``cli``'s terminal key."""
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
    claims = [(i, c) for i, e in enumerate(chunk) if "discount" in e.data and (c := campaign_sync.claim_for(e, cli))]
    return encode_batch(ders, vouchers, claims)


def upload_batches(cli: OperatorClient, chunks: Iterable[list[Entry]], encode: Callable[[list[Entry]], bytes],
                   depth: int = PIPELINE_DEPTH, version: Callable[[list[Entry]], int] | None = None,
                   ) -> Iterator[tuple[list[Entry], SettlementAnswer]]:
    """Each chunk with the operator's answer to it, in order: the first chunk alone, then ``depth`` in flight.

    ``encode`` runs on the calling thread (it may read the ledger); only the requests run on helper threads. The
    first failure is raised once the requests already in flight have ended (they stop retrying); none of their
    answers is yielded after it. Settlement is idempotent by voucher id, so a batch the operator settled but whose
    answer is dropped here is answered ``duplicate`` when it goes up again. ``version`` gives the denylist version
    a chunk was taken under (sent with it when above 0).
    """
    rest = iter(chunks)
    first = next(rest, None)
    if first is None:
        return

    def declared(chunk: list[Entry]) -> int | None:
        return (version(chunk) or None) if version is not None else None  # 0 goes unsaid

    yield first, cli.settle_batch(encode(first), denylist_version=declared(first))
    if depth <= 1:
        for chunk in rest:
            yield chunk, cli.settle_batch(encode(chunk), denylist_version=declared(chunk))
        return
    cancel = threading.Event()
    in_flight: deque[tuple[list[Entry], Future[SettlementAnswer]]] = deque()
    with ThreadPoolExecutor(depth, thread_name_prefix="sync-upload") as pool:

        def send() -> None:
            chunk = next(rest, None)
            if chunk is not None:
                in_flight.append((chunk, pool.submit(cli.settle_batch, encode(chunk), cancel=cancel,
                                                     denylist_version=declared(chunk))))

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


def _record(ledger: Ledger, chunk: list[Entry], results: Any, result: SyncResult,
            ahead_ms: int | None = None) -> None:
    """Write one settlement entry per answered voucher, in one transaction, skipping any already answered. When the
    terminal's clock is off by more than the window (``ahead_ms``), each entry keeps the corrected ``day`` the
    operator counts the voucher in (:func:`pos.sync.clockskew.business_day`)."""
    if not isinstance(results, list) or len(results) != len(chunk):
        raise SyncError("the operator's answer does not list one result per uploaded voucher")
    for e, r in zip(chunk, results):
        if not isinstance(r, dict) or r.get("status") not in ("settled", "duplicate", "rejected") or (
                r.get("voucher_id") not in (e.voucher_id, None)):
            raise SyncError(f"the operator's answer for {e.voucher_id} does not match the upload")
    with ledger.transaction() as tx:
        done = ledger.answered([e.voucher_id for e in chunk])  # under the write lock: a racing sync has committed
        for e, r in zip(chunk, results):
            if e.voucher_id in done:
                continue
            data = {"status": r["status"], "reason": r.get("reason")}
            if r.get("flag"):
                data["flag"] = r["flag"]  # settled or rejected as the status says: final either way
            if clockskew.correction_ms(ahead_ms):
                ts = Voucher.decode(bytes.fromhex(e.data["voucher"])).body.timestamp_ms
                data["day"] = clockskew.business_day(ts, ahead_ms)
            if r.get("claim"):
                data["claim"] = r["claim"]  # the discount claim: paid (maybe flagged) or refused
            tx.append("settlement", voucher_id=e.voucher_id, wallet_id=e.wallet_id, counter=e.counter,
                      amount_fen=e.amount_fen, data=data)
    result.uploaded += len(chunk)
    for e, r in zip(chunk, results):
        if r.get("flag") and r["status"] != "duplicate":
            result.flagged.append({"voucher_id": e.voucher_id, "status": r["status"], "flag": r["flag"]})
        if r.get("claim"):
            result.claims.append({"voucher_id": e.voucher_id, **r["claim"]})
        if r["status"] == "settled":
            result.settled += 1
        elif r["status"] == "duplicate":
            result.duplicate += 1
        else:
            result.rejected.append({"voucher_id": e.voucher_id, "reason": r.get("reason")})


__all__ = ["OperatorUnavailable", "SyncError", "SyncProgress", "SyncResult", "sync_once", "upload_batches"]
