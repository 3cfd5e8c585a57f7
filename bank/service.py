"""The operator's business logic: terminals, wallets, load tokens, settlement, double spends, denylist, accounts,
refunds and reconciliation reports. The HTTP layer (:mod:`bank.app`) is a thin shell around :class:`Operator`; the
terminal's offline fallbacks (issuing cards, loading them) call the same class on the embedded database.

Settlement trusts nothing the terminal says. Per voucher: canonical decoding, payee (merchant and terminal) equal to
the authenticated uploader, certificate chain to the operator root valid at the voucher's time, the certificate
naming the voucher's wallet, the card's signature, the tier's single and daily limits and the offline single cap.
Then, inside one transaction per batch: a voucher whose (wallet, counter) is already settled with the same body is a
``duplicate``; with another body, or one that would take the wallet's settled spending over what was loaded onto
it, it is a ``double_spend``: the first settled stands, the wallet is revoked and the denylist version bumped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from filelock import FileLock
from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from bank.errors import BadRequest, Conflict, Forbidden, NotFound, OperatorError, Unauthenticated
from bank.schema import (
    accounts,
    denylist,
    load_tokens,
    make_engine,
    nonces,
    read_only,
    refunds,
    rejections,
    terminals,
    vouchers,
    wallets,
)
from wallet import suites
from wallet.card import china_day_text
from wallet.certs import (
    OperatorPki,
    WalletCertInfo,
    cert_der,
    chain_validity,
    verify_terminal_certificate,
    verify_wallet_certificate,
    write_atomic,
)
from wallet.errors import CertificateError, EncodingError, InvalidInput, SignatureError
from wallet.ids import check_terminal_id, check_wallet_id, new_wallet_id
from wallet.ids import voucher_id as make_voucher_id
from wallet.limits import TIER_LIMITS
from wallet.protocol import LoadToken
from wallet.voucher import CNY, Voucher, VoucherBody
from wire import signing
from wire.batch import MAX_BATCH, UploadItem

if TYPE_CHECKING:
    from pos.home import Home

# Signature checks of a batch run on a few threads of the worker: `cryptography` releases the GIL while it verifies,
# so the checks of one card overlap with those of another and with the Python work of the thread that holds the GIL.
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))  # the settling thread and its helpers
VERIFY_CHUNK = 32  # vouchers per verification task (whole cards)
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
MAX_FUTURE_MS = 24 * 3600 * 1000  # a voucher dated more than a day ahead of the operator's clock is refused
RETRIES = 8

# Reason codes of the operator (besides the certificate codes shared with terminals).
DOUBLE_SPEND = "double_spend"
BAD_VOUCHER = "bad_voucher"
BAD_SIGNATURE = "bad_signature"
WRONG_PAYEE = "wrong_payee"
WRONG_TERMINAL = "wrong_terminal"
WALLET_MISMATCH = "wallet_mismatch"
FUTURE_TIMESTAMP = "future_timestamp"
OVER_SINGLE_LIMIT = "over_single_limit"
OVER_DAILY_LIMIT = "over_daily_limit"
OVER_OFFLINE_LIMIT = "over_offline_limit"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ms(t: dt.datetime) -> int:
    """An aware datetime in ms since the epoch (certificate times are whole seconds: exact)."""
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def load_admin_token(pki_dir: Path) -> str:
    """The operator's back-office bearer token (``pki_dir/admin.token``, created on first use, mode 0600)."""
    path = pki_dir / "admin.token"
    pki_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with FileLock(str(pki_dir / ".lock"), timeout=60):
            if not path.exists():
                write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
    return path.read_text().strip()


def default_db_url(home_root: Path) -> str:
    """The embedded default database: a SQLite file under the home."""
    directory = home_root / "operator"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'operator.db'}"


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """An authenticated terminal. ``pending_nonce`` (nonce, time) is set when the request's nonce is still to be
    recorded, in the transaction of what the request changes (see :meth:`Operator.authenticate`)."""

    terminal_id: str
    merchant_id: str
    pending_nonce: tuple[str, int] | None = None


@dataclass(slots=True)
class _Judged:
    index: int
    vhash: str
    body: VoucherBody | None = None
    signature: bytes = b""
    body_raw: bytes = b""
    body_hash: str = ""
    tier: int = 0
    cert_der: bytes = b""
    voucher_id: str | None = None
    wallet_id: str | None = None
    amount_fen: int = 0
    timestamp_ms: int = 0
    suite: int = 0
    day: str = ""
    status: str | None = None
    reason: str | None = None

    def answer(self) -> dict[str, Any]:
        return {"voucher_id": self.voucher_id, "status": self.status, "reason": self.reason}


@dataclass
class _WalletState:
    loaded: int | None
    spent: int
    status: str
    spent_delta: int = 0
    revoke: bool = False


@dataclass
class Operator:
    """The operator backend over one database."""

    engine: Engine
    pki: OperatorPki
    terminal_merchants: dict[str, str] = field(default_factory=dict)  # configured terminal -> merchant
    fee_bps: int = 0
    offline_single_max: int | None = None
    admin_token: str | None = None
    fault: str | None = None  # test fault injection: "crash_before_commit" | "crash_after_commit"
    verify_threads: int = VERIFY_THREADS

    def __post_init__(self) -> None:
        self.roots = (cert_der(self.pki.root.cert),)
        self._terminal_keys: dict[tuple[str, bytes], ec.EllipticCurvePublicKey] = {}
        self._chains: dict[tuple[bytes, bytes], tuple[int, int, WalletCertInfo]] = {}  # card -> window (ms), info
        self._last_prune = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._settle_lock = threading.Lock()
        # SQLite has one writer at a time: threads of this process queue here instead of in SQLite's busy handler
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @classmethod
    def for_home(cls, home: Home, db_url: str | None = None) -> Operator:
        """The operator of a home: its CA under HOME/pki, settings from merchants.yaml, DB (default: embedded)."""
        cfg = home.config
        return cls(
            engine=make_engine(db_url or default_db_url(home.root)),
            pki=home.pki,
            terminal_merchants={t.id: m.id for m in cfg.merchants for t in m.terminals},
            fee_bps=cfg.operator.fee_bps,
            offline_single_max=cfg.risk.offline_single_max,
            admin_token=load_admin_token(home.root / "pki"),
            fault=os.environ.get("ECNY_OPERATOR_FAULT") or None,
        )

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self.engine.dispose()

    def warm_up(self) -> None:
        """Do once, before serving, what the first batches would otherwise pay for: the verification threads
        started, the settlement queries compiled for every IN-list size, the database connections opened, and one
        synthetic voucher (a throwaway card certified by this operator's wallet CA) judged and committed in a
        transaction that is rolled back, so the code paths, the issuer's chain link and SQLAlchemy's statement
        cache are warm. Nothing is written."""
        pool = self._verify_pool()
        if pool is not None:
            for f in [pool.submit(time.sleep, 0.01) for _ in range(self.verify_threads - 1)]:
                f.result()
        _precompile(self.engine.dialect)
        key = ec.generate_private_key(ec.SECP256R1())
        wallet_id = new_wallet_id()
        leaf = cert_der(self.pki.wallet_ca.issue_wallet_cert(wallet_id, 4, key.public_key()))
        merchant, tid = next(((m, t) for t, m in sorted(self.terminal_merchants.items())), ("0" * 15, "WARMUP00"))
        term = TerminalRecord(tid, merchant)
        body = VoucherBody(wallet_id, 1, 100, CNY, merchant, tid, secrets.token_bytes(16), now_ms(), 0)
        item = UploadItem(Voucher.sign(body, key).encode(), leaf, cert_der(self.pki.wallet_ca.cert))
        judged = [self._parse(0, item, term)]
        self._prior_answers(term, judged)
        self._verify_all([j for j in judged if j.status is None], [item])
        if judged[0].status is not None:
            raise OperatorError(f"warm-up voucher refused: {judged[0].reason}")
        with read_only(self.engine) as conn:  # the authentication's reads
            conn.execute(select(terminals).where(terminals.c.terminal_id == tid)).first()
            conn.execute(select(nonces.c.nonce).where(nonces.c.terminal_id == tid, nonces.c.nonce == "")).first()
            conn.execute(select(func.max(denylist.c.version))).scalar()
        if self.fault is None:  # (a fault-injecting operator would crash on the synthetic commit)
            with self._write_lock, self.engine.connect() as conn:
                tx = conn.begin()
                try:
                    self._commit_batch(conn, replace(term, pending_nonce=("0" * 32, 0)), judged, judged,
                                       [item.voucher])
                finally:
                    tx.rollback()

    # -- transactions -----------------------------------------------------------------------------------------------
    def _write(self, fn: Any, *args: Any, before_commit: Any = None) -> Any:
        """Run ``fn(conn, *args)`` in one transaction, again from the start after a unique-key race or a lock.

        ``before_commit()`` runs once ``fn`` has returned, before the transaction commits."""
        for attempt in range(RETRIES):
            try:
                with self._write_lock, self.engine.begin() as conn:
                    out = fn(conn, *args)
                    if before_commit is not None:
                        before_commit()
                    return out
            except IntegrityError:
                if attempt == RETRIES - 1:
                    raise
            except OperationalError as exc:
                if attempt == RETRIES - 1 or "locked" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def check_admin(self, token: str | None) -> None:
        """Raise :class:`Unauthenticated` unless ``token`` is the back-office token."""
        if not self.admin_token or not token or not secrets.compare_digest(token, self.admin_token):
            raise Unauthenticated("admin token missing or wrong", "bad_admin_token")

    # -- terminals --------------------------------------------------------------------------------------------------
    def provision_terminal(self, terminal_id: str, public_key_pem: bytes) -> dict[str, Any]:
        """Certify a terminal's key and put it on file. Returns the certificate and chain as PEM text."""
        try:
            check_terminal_id(terminal_id)
        except InvalidInput as exc:
            raise BadRequest(str(exc)) from None
        merchant_id = self.terminal_merchants.get(terminal_id)
        if merchant_id is None:
            raise NotFound(f"terminal {terminal_id} is not in the operator's merchant list", "unknown_terminal")
        try:
            key = serialization.load_pem_public_key(public_key_pem)
        except ValueError as exc:
            raise BadRequest(f"public key does not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise BadRequest("terminal key must be EC P-256")
        cert = self.pki.terminal_ca.issue_terminal_cert(terminal_id, merchant_id, key)
        der = cert_der(cert)

        def run(conn: Connection) -> None:
            row = conn.execute(select(terminals.c.status).where(terminals.c.terminal_id == terminal_id)).first()
            if row is not None and row.status == "revoked":
                raise Forbidden(f"terminal {terminal_id} is revoked", "terminal_revoked")
            if row is None:
                conn.execute(insert(terminals).values(terminal_id=terminal_id, merchant_id=merchant_id, cert_der=der,
                                                      status="active", created_ms=now_ms()))
            else:
                conn.execute(update(terminals).where(terminals.c.terminal_id == terminal_id)
                             .values(cert_der=der, merchant_id=merchant_id))

        self._write(run)
        pem = serialization.Encoding.PEM
        return {"terminal_id": terminal_id, "merchant_id": merchant_id,
                "certificate": cert.public_bytes(pem).decode(),
                "chain": self.pki.terminal_ca.cert.public_bytes(pem).decode(),
                "root": self.pki.root.cert.public_bytes(pem).decode()}

    def revoke_terminal(self, terminal_id: str) -> dict[str, Any]:
        def run(conn: Connection) -> int:
            return conn.execute(update(terminals).where(terminals.c.terminal_id == terminal_id)
                                .values(status="revoked")).rowcount

        if not self._write(run):
            raise NotFound(f"no terminal {terminal_id}", "unknown_terminal")
        return {"terminal_id": terminal_id, "status": "revoked"}

    def authenticate(self, headers: dict[str, str], method: str, path: str, query: str,
                     body: bytes, defer_nonce: bool = False) -> TerminalRecord:
        """Check a signed request (see :mod:`wire.signing`); raise :class:`Unauthenticated` or :class:`Forbidden`.

        The request's nonce is recorded durably before this returns, unless ``defer_nonce``: then it is only checked
        against those on file and comes back as ``pending_nonce``, for :meth:`settle` to record in the batch's own
        transaction (one durable commit per batch instead of two). A replay racing its original is then refused
        when it commits, and changes nothing.
        """
        tid = headers.get(signing.H_TERMINAL.lower(), "")
        nonce = headers.get(signing.H_NONCE.lower(), "")
        if not tid or not nonce or signing.H_SIGNATURE.lower() not in headers or signing.H_TIME.lower() not in headers:
            raise Unauthenticated("request is not signed by a terminal", "unsigned_request")
        if len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
            raise Unauthenticated("nonce must be 32 lowercase hex digits", "bad_nonce")
        try:
            t = int(headers[signing.H_TIME.lower()])
            sig = signing.decode_signature(headers[signing.H_SIGNATURE.lower()])
        except ValueError:
            raise Unauthenticated("malformed time or signature header", "bad_request_signature") from None
        with read_only(self.engine) as conn:
            row = conn.execute(select(terminals).where(terminals.c.terminal_id == tid)).first()
            used = defer_nonce and conn.execute(select(nonces.c.nonce).where(
                nonces.c.terminal_id == tid, nonces.c.nonce == nonce)).first() is not None
        if row is None:
            raise Unauthenticated(f"unknown terminal {tid!r}", "unknown_terminal")
        if row.status != "active":
            raise Forbidden(f"terminal {tid} is revoked", "terminal_revoked")
        key = self._terminal_key(tid, row.cert_der)
        now = now_ms()
        if abs(now - t) > signing.MAX_SKEW_MS:
            raise Unauthenticated("request time is too far from the operator's clock", "stale_request")
        try:
            suites.verify(key, signing.signing_string(method, path, query, t, nonce, body), sig, suites.DEFAULT_SUITE)
        except SignatureError:
            raise Unauthenticated(f"request signature does not verify for terminal {tid}",
                                  "bad_request_signature") from None

        if used:
            raise _replayed()
        if defer_nonce:
            return TerminalRecord(tid, row.merchant_id, (nonce, t))
        with self._write_lock, self.engine.begin() as conn:
            self._remember_nonce(conn, tid, nonce, t)
        return TerminalRecord(tid, row.merchant_id)

    def _remember_nonce(self, conn: Connection, tid: str, nonce: str, t: int) -> None:
        """Record a request's nonce in the caller's transaction; :class:`Unauthenticated` if it is on file."""
        if _execute(conn, "nonce", lambda: _insert_ignore(conn, nonces).values(
                terminal_id=bindparam("t"), nonce=bindparam("n"), time_ms=bindparam("ms")),
                {"t": tid, "n": nonce, "ms": t}).rowcount != 1:
            raise _replayed()
        now = now_ms()
        if now - self._last_prune > 60_000:
            self._last_prune = now
            conn.execute(nonces.delete().where(nonces.c.time_ms < now - 3 * signing.MAX_SKEW_MS))

    def _terminal_key(self, tid: str, der: bytes) -> ec.EllipticCurvePublicKey:
        key = self._terminal_keys.get((tid, der))
        if key is None:
            try:
                info = verify_terminal_certificate(der, (cert_der(self.pki.terminal_ca.cert),), self.roots,
                                                   dt.datetime.now(dt.UTC))
            except CertificateError as exc:
                raise Forbidden(f"terminal certificate refused: {exc}", "terminal_certificate") from None
            if info.terminal_id != tid:
                raise Forbidden("terminal certificate names another terminal", "terminal_certificate")
            key = info.public_key
            self._terminal_keys[(tid, der)] = key
        return key

    # -- wallets and loads ------------------------------------------------------------------------------------------
    def register_wallet(self, wallet_id: str, tier: int, certificate: bytes, opening_fen: int) -> dict[str, Any]:
        """Put a newly issued wallet on file with its opening balance (idempotent for the same certificate)."""
        try:
            check_wallet_id(wallet_id)
            info = verify_wallet_certificate(certificate, (cert_der(self.pki.wallet_ca.cert),), self.roots,
                                             dt.datetime.now(dt.UTC))
        except (InvalidInput, CertificateError) as exc:
            raise BadRequest(str(exc), "bad_wallet") from None
        if info.wallet_id != wallet_id or info.tier != tier:
            raise BadRequest("the certificate names another wallet or tier", "bad_wallet")
        if opening_fen < 0:
            raise BadRequest("opening balance must not be negative")

        def run(conn: Connection) -> None:
            row = conn.execute(select(wallets.c.cert_der, wallets.c.loaded_fen)
                               .where(wallets.c.wallet_id == wallet_id)).first()
            if row is None:
                conn.execute(insert(wallets).values(
                    wallet_id=wallet_id, tier=tier, cert_der=certificate, loaded_fen=opening_fen, spent_fen=0,
                    online_fen=0, load_counter=0, status="active", created_ms=now_ms()))
            elif row.cert_der != certificate:
                raise Conflict(f"wallet {wallet_id} is registered with another certificate", "wallet_exists")

        self._write(run)
        return {"wallet_id": wallet_id, "tier": tier, "status": "registered"}

    def issue_load_token(self, wallet_id: str, amount_fen: int, after_counter: int = 0) -> LoadToken:
        """A signed load token numbered past both the operator's and the card's last load counter."""
        if amount_fen <= 0:
            raise BadRequest("load amount must be positive")

        def run(conn: Connection) -> LoadToken:
            row = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
            if row is None:
                raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
            if row.status != "active":
                raise Forbidden(f"wallet {wallet_id} is revoked", "wallet_revoked")
            limit = TIER_LIMITS[row.tier].balance_max
            if limit is not None and amount_fen > limit:
                raise BadRequest("load over the wallet balance cap", "over_balance_limit")
            counter = max(row.load_counter, after_counter) + 1
            conn.execute(update(wallets).where(wallets.c.wallet_id == wallet_id).values(
                load_counter=counter,
                loaded_fen=None if row.loaded_fen is None else wallets.c.loaded_fen + amount_fen))
            t = now_ms()
            conn.execute(insert(load_tokens).values(wallet_id=wallet_id, load_counter=counter, amount_fen=amount_fen,
                                                    created_ms=t))
            return LoadToken(wallet_id, counter, amount_fen, t).signed(self.pki.wallet_ca.key)

        return self._write(run)

    def wallet(self, wallet_id: str) -> dict[str, Any]:
        with read_only(self.engine) as conn:
            row = conn.execute(select(wallets).where(wallets.c.wallet_id == wallet_id)).first()
        if row is None:
            raise NotFound(f"wallet {wallet_id} is not registered", "unknown_wallet")
        return {"wallet_id": row.wallet_id, "tier": row.tier, "status": row.status, "loaded_fen": row.loaded_fen,
                "spent_fen": row.spent_fen, "online_fen": row.online_fen, "load_counter": row.load_counter,
                "revoked_reason": row.revoked_reason}

    # -- settlement -------------------------------------------------------------------------------------------------
    def settle(self, terminal: TerminalRecord, items: Sequence[UploadItem]) -> list[dict[str, Any]]:
        """Judge and settle a batch; one answer per item, in order. Safe to repeat any number of times."""
        if len(items) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} vouchers per batch")
        # One batch at a time is judged and written (its verification threads have the cores to themselves, and
        # its Python work does not fight another batch's for the GIL); the next one starts while this one's
        # transaction commits, which waits on the disk with the GIL released.
        held = [self._settle_lock]

        def release() -> None:
            if held:
                held.pop().release()

        self._settle_lock.acquire()
        try:
            judged = [self._parse(i, item, terminal) for i, item in enumerate(items)]
            open_ = [j for j in judged if j.status is None]
            self._prior_answers(terminal, open_)
            self._verify_all([j for j in open_ if j.status is None], items)
            candidates = [j for j in judged if j.status is None]
            self._write(self._commit_batch, terminal, judged, candidates, [i.voucher for i in items],
                        before_commit=release)
        finally:
            release()
        return [j.answer() for j in judged]

    def _parse(self, index: int, item: UploadItem, terminal: TerminalRecord) -> _Judged:
        raw = item.voucher
        vhash = sha256(raw).hexdigest()
        try:
            voucher = Voucher.decode(raw)
        except EncodingError:
            return _Judged(index, vhash, status="rejected", reason=BAD_VOUCHER, day=china_day_text(now_ms()))
        b, body_raw, signature = voucher.body, voucher.body.encode(), voucher.signature
        ts = b.timestamp_ms  # within the calendar: the decoder refuses a timestamp with no day in China
        j = _Judged(index, vhash, b, signature, body_raw, sha256(body_raw).hexdigest(),
                    voucher_id=make_voucher_id(b.wallet_id, b.counter), wallet_id=b.wallet_id, amount_fen=b.amount_fen,
                    timestamp_ms=ts, suite=b.suite, day=china_day_text(ts))
        if b.merchant_id != terminal.merchant_id:
            j.status, j.reason = "rejected", WRONG_PAYEE
        elif b.terminal_id != terminal.terminal_id:
            j.status, j.reason = "rejected", WRONG_TERMINAL
        elif b.currency != CNY or b.amount_fen <= 0:
            j.status, j.reason = "rejected", BAD_VOUCHER
        return j

    def _prior_answers(self, terminal: TerminalRecord, open_: list[_Judged]) -> None:
        """Answer re-uploads from what is on file: same settled body -> duplicate; same rejected bytes -> same."""
        if not open_:
            return
        with read_only(self.engine) as conn:
            settled = _select_in(conn, "settled_bodies", _settled_bodies, [j.voucher_id for j in open_])
            rejected = _select_in(conn, "prior_rejections", _prior_rejections, [j.vhash for j in open_],
                                  terminal_id=terminal.terminal_id)
        bodies = dict(settled)
        reasons = dict(rejected)
        for j in open_:
            if bodies.get(j.voucher_id) == j.body_hash:
                j.status = "duplicate"
            elif j.vhash in reasons:
                j.status, j.reason = "rejected", reasons[j.vhash]

    def _verify_all(self, todo: list[_Judged], items: Sequence[UploadItem]) -> None:
        """Re-verify every voucher of ``todo`` on this thread and ``verify_threads - 1`` helpers, in two passes.

        First the date, the certificate chain at the voucher's time and the wallet id, whole cards per task (a new
        card's chain is verified once, by one thread); then the signatures and limits of the vouchers that passed,
        in chunks. `cryptography` releases the GIL while it verifies, and the second pass is almost nothing else, so
        its checks run side by side. A voucher's verdict depends on that voucher alone, the same as one by one in
        any order; the order of its checks (hence the reason code) is date, chain, wallet id, signature, limits.
        """
        cards: dict[tuple[bytes, bytes], list[_Judged]] = {}
        for j in todo:
            item = items[j.index]
            cards.setdefault((item.cert_der, item.issuer_der), []).append(j)
        if self.verify_threads <= 1 or len(todo) <= VERIFY_CHUNK:
            ready: list[tuple[_Judged, ec.EllipticCurvePublicKey, int, bytes]] = []
            for card, group in cards.items():
                self._check_card(card, group, ready)
            self._check_signatures(ready)
            return
        tasks: list[list[tuple[tuple[bytes, bytes], list[_Judged]]]] = [[]]
        size = 0
        for card_group in cards.items():
            if size >= VERIFY_CHUNK:
                tasks.append([])
                size = 0
            tasks[-1].append(card_group)
            size += len(card_group[1])
        passed: list[list[tuple[_Judged, ec.EllipticCurvePublicKey, int, bytes]]] = [[] for _ in tasks]

        def chains(k: int) -> None:
            for card, group in tasks[k]:
                self._check_card(card, group, passed[k])

        self._shared(chains, range(len(tasks)))
        ready = [r for out in passed for r in out]
        self._shared(self._check_signatures, [ready[i:i + VERIFY_CHUNK] for i in range(0, len(ready), VERIFY_CHUNK)])

    def _shared(self, fn: Any, tasks: Iterable[Any]) -> None:
        """Run ``fn(task)`` for every task on this thread and the helpers, each task once, until none is left."""
        queue = iter(tasks)  # the iterator hands each task to exactly one thread (its next() holds the GIL)

        def work() -> None:
            for task in queue:
                fn(task)

        pool = self._verify_pool()
        helpers = [pool.submit(work) for _ in range(self.verify_threads - 1)] if pool is not None else []
        try:
            work()
        finally:
            for f in helpers:
                f.result()

    def _verify_pool(self) -> ThreadPoolExecutor | None:
        if self.verify_threads <= 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.verify_threads - 1, thread_name_prefix="verify")
            return self._pool

    def _check_card(self, card: tuple[bytes, bytes], group: list[_Judged],
                    out: list[tuple[_Judged, ec.EllipticCurvePublicKey, int, bytes]]) -> None:
        """Each voucher's date, its card's chain at the voucher's time and the wallet id. A voucher that passes goes
        to ``out`` with its card's key and tier; one that fails is rejected. The chain is verified once per card
        (see :meth:`_card_window`); each voucher is then only checked against the chain's validity window."""
        leaf, issuer = card
        latest = now_ms() + MAX_FUTURE_MS
        window: tuple[int, int, WalletCertInfo] | None = None
        for j in group:
            ts = j.timestamp_ms
            if ts > latest:
                j.status, j.reason = "rejected", FUTURE_TIMESTAMP
                continue
            if window is None or not window[0] <= ts <= window[1]:
                try:
                    window = self._card_window(leaf, issuer, ts)
                except CertificateError as exc:
                    j.status, j.reason = "rejected", exc.reason
                    continue
            info = window[2]
            if info.wallet_id != j.wallet_id:
                j.status, j.reason = "rejected", WALLET_MISMATCH
                continue
            out.append((j, info.public_key, info.tier, leaf))

    def _check_signatures(self, chunk: list[tuple[_Judged, ec.EllipticCurvePublicKey, int, bytes]]) -> None:
        """The card's signature, then the tier's single limit and the offline cap, for each voucher of ``chunk``
        (runs on any thread; the loop does little besides the signature check, which releases the GIL)."""
        default_suite, algorithm, from_bytes = suites.ECDSA_P256_SHA256, _ECDSA_SHA256, int.from_bytes
        offline_max = self.offline_single_max
        for j, key, tier, leaf in chunk:
            sig = j.signature
            try:
                if j.suite == default_suite and len(sig) == 64:
                    # suites.verify, inlined for the default suite (one signature check per voucher is the cost)
                    key.verify(encode_dss_signature(from_bytes(sig[:32], "big"), from_bytes(sig[32:], "big")),
                               j.body_raw, algorithm)
                else:
                    suites.verify(key, j.body_raw, sig, j.suite)
            except (SignatureError, InvalidSignature):
                j.status, j.reason = "rejected", BAD_SIGNATURE
                continue
            limits = TIER_LIMITS.get(tier)
            amount = j.amount_fen
            if limits is None:
                j.status, j.reason = "rejected", BAD_VOUCHER
            elif limits.single_max is not None and amount > limits.single_max:
                j.status, j.reason = "rejected", OVER_SINGLE_LIMIT
            elif offline_max is not None and amount > offline_max:
                j.status, j.reason = "rejected", OVER_OFFLINE_LIMIT
            j.tier = tier
            j.cert_der = leaf

    def _card_window(self, leaf: bytes, issuer: bytes, ts: int) -> tuple[int, int, WalletCertInfo]:
        """A card's chain verified at ``ts`` (ms), once per card: cached with the window (ms) in which every
        certificate of the chain is valid. Raises :class:`CertificateError` when the chain fails at ``ts``."""
        hit = self._chains.get((leaf, issuer))
        if hit is not None and hit[0] <= ts <= hit[1]:
            return hit
        at = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        info = verify_wallet_certificate(leaf, (issuer,), self.roots, at)
        not_before, not_after = chain_validity(leaf, (issuer,), self.roots)
        if len(self._chains) > 100_000:
            self._chains.clear()
        hit = self._chains[(leaf, issuer)] = (_ms(not_before), _ms(not_after), info)
        return hit

    def _commit_batch(self, conn: Connection, terminal: TerminalRecord, judged: list[_Judged],
                      candidates: list[_Judged], raw: list[bytes]) -> None:
        """Settle the verified ``candidates`` of a batch in the caller's transaction (re-run whole on a race), with
        the request's nonce when it is still to be recorded."""
        if terminal.pending_nonce is not None:
            self._remember_nonce(conn, terminal.terminal_id, *terminal.pending_nonce)
        for j in candidates:
            j.status, j.reason = None, None
        t = now_ms()
        new_rows: list[tuple[Any, ...]] = []
        gross = fees = 0
        if candidates:
            on_file = dict(_select_in(conn, "settled_bodies", _settled_bodies, [j.voucher_id for j in candidates]))
            wids = sorted({j.wallet_id for j in candidates if j.wallet_id})
            states = self._wallet_states(conn, candidates, wids)
            days = sorted({j.day for j in candidates})
            daily: dict[tuple[str, str], int] = defaultdict(int)
            for wid, day, total in _select_in(conn, "daily_totals", _daily_totals, wids, days):
                daily[(wid, day)] = int(total)
            for j in candidates:
                assert j.body is not None and j.wallet_id is not None and j.voucher_id is not None
                w = states[j.wallet_id]
                if j.voucher_id in on_file:
                    if on_file[j.voucher_id] == j.body_hash:
                        j.status = "duplicate"
                        continue
                    j.status, j.reason = "rejected", DOUBLE_SPEND
                    w.revoke = True
                    continue
                if w.loaded is not None and w.spent + w.spent_delta + j.amount_fen > w.loaded:
                    j.status, j.reason = "rejected", DOUBLE_SPEND
                    w.revoke = True
                    continue
                daily_max = TIER_LIMITS[j.tier].daily_max
                if daily_max is not None and daily[(j.wallet_id, j.day)] + j.amount_fen > daily_max:
                    j.status, j.reason = "rejected", OVER_DAILY_LIMIT
                    continue
                daily[(j.wallet_id, j.day)] += j.amount_fen
                w.spent_delta += j.amount_fen
                on_file[j.voucher_id] = j.body_hash
                j.status = "settled"
                fee = j.amount_fen * self.fee_bps // 10_000
                new_rows.append((
                    j.voucher_id, j.wallet_id, j.body.counter, j.body_hash, raw[j.index], j.amount_fen,
                    fee, 0, terminal.merchant_id, terminal.terminal_id, j.timestamp_ms, j.day, t))
                gross += j.amount_fen
                fees += fee
            if new_rows:
                # the hot insert goes straight to the driver: SQLAlchemy's per-row parameter processing would cost
                # as much as a signature check (same SQL, same parameters, both dialects)
                sql, positional = _voucher_insert(conn.dialect)
                conn.exec_driver_sql(sql, new_rows if positional else [dict(zip(_VOUCHER_COLUMNS, r))
                                                                       for r in new_rows])
            self._update_wallets(conn, states, t)
            if new_rows:
                self._credit(conn, terminal.merchant_id, gross, fees)
        rejected = [{"terminal_id": terminal.terminal_id, "voucher_hash": j.vhash, "voucher_id": j.voucher_id,
                     "wallet_id": j.wallet_id, "amount_fen": j.amount_fen, "reason": j.reason, "day": j.day,
                     "created_ms": t} for j in judged if j.status == "rejected"]
        if rejected:
            conn.execute(_insert_ignore(conn, rejections), rejected)
        if self.fault == "crash_before_commit" and new_rows:
            os._exit(137)
        if self.fault == "crash_after_commit" and new_rows:
            conn.commit()
            os._exit(137)

    def _wallet_states(self, conn: Connection, candidates: list[_Judged], wids: list[str]) -> dict[str, _WalletState]:
        rows = {r[0]: r for r in _select_in(conn, "wallet_states", _wallet_rows, wids, for_update=True)}
        missing = [w for w in wids if w not in rows]
        if missing:
            # A wallet the operator has no record of, but certified by its own CA: on file from now on, with its
            # loaded amount unknown (only the counter rule can catch its double spends).
            first = {j.wallet_id: j for j in reversed(candidates)}
            conn.execute(_insert_ignore(conn, wallets), [
                {"wallet_id": w, "tier": first[w].tier, "cert_der": first[w].cert_der, "loaded_fen": None,
                 "spent_fen": 0, "online_fen": 0, "load_counter": 0, "status": "active", "created_ms": now_ms()}
                for w in missing])
            rows.update({r[0]: r for r in _select_in(conn, "wallet_states", _wallet_rows, missing,
                                                             for_update=True)})
        return {w: _WalletState(r[1], r[2], r[3]) for w, r in rows.items()}

    def _update_wallets(self, conn: Connection, states: dict[str, _WalletState], t: int) -> None:
        spent = [{"w": w, "d": s.spent_delta} for w, s in states.items() if s.spent_delta]
        if spent:
            _execute(conn, "wallet_spent", _wallet_spent, spent)
        for w, s in states.items():
            if s.revoke and s.status == "active":
                conn.execute(update(wallets).where(wallets.c.wallet_id == w)
                             .values(status="revoked", revoked_reason=DOUBLE_SPEND))
                version = (conn.execute(select(func.max(denylist.c.version))).scalar() or 0) + 1
                conn.execute(insert(denylist).values(version=version, wallet_id=w, action="add",
                                                     reason=DOUBLE_SPEND, created_ms=t))

    def _credit(self, conn: Connection, merchant_id: str, gross: int, fees: int, refunded: int = 0) -> None:
        """Add to a merchant's account, opening it on its first credit (a race to open it is a unique-key
        violation: the caller's transaction is run again)."""
        amounts = {"m": merchant_id, "net": gross - fees - refunded, "gross": gross, "fees": fees,
                   "refunded": refunded}
        if _execute(conn, "account_credit", _account_credit, amounts).rowcount == 0:
            _execute(conn, "account_open", _account_open, amounts)

    # -- denylist ---------------------------------------------------------------------------------------------------
    def denylist_since(self, since: int) -> dict[str, Any]:
        """Denylist changes after version ``since``: the wallets added and removed, and the current version."""
        if since < 0:
            raise BadRequest("since must be 0 or more")
        with read_only(self.engine) as conn:
            rows = conn.execute(select(denylist.c.version, denylist.c.wallet_id, denylist.c.action)
                                .where(denylist.c.version > since).order_by(denylist.c.version)).all()
            version = conn.execute(select(func.max(denylist.c.version))).scalar() or 0
        state: dict[str, str] = {}
        for _, wid, action in rows:
            state[wid] = action
        return {"version": max(version, since) if rows else version, "since": since,
                "added": sorted(w for w, a in state.items() if a == "add"),
                "removed": sorted(w for w, a in state.items() if a == "remove")}

    def denylist_version(self) -> int:
        with read_only(self.engine) as conn:
            return conn.execute(select(func.max(denylist.c.version))).scalar() or 0

    def revoke_wallet(self, wallet_id: str, reason: str = "revoked") -> dict[str, Any]:
        """Back-office revocation (lost card): the wallet goes on the denylist."""
        def run(conn: Connection) -> int:
            n = conn.execute(update(wallets).where(and_(wallets.c.wallet_id == wallet_id,
                                                        wallets.c.status == "active"))
                             .values(status="revoked", revoked_reason=reason)).rowcount
            if n:
                version = (conn.execute(select(func.max(denylist.c.version))).scalar() or 0) + 1
                conn.execute(insert(denylist).values(version=version, wallet_id=wallet_id, action="add",
                                                     reason=reason, created_ms=now_ms()))
            return n

        self._write(run)
        return self.wallet(wallet_id)

    # -- merchant accounts and refunds ------------------------------------------------------------------------------
    def account(self, merchant_id: str) -> dict[str, Any]:
        with read_only(self.engine) as conn:
            row = conn.execute(select(accounts).where(accounts.c.merchant_id == merchant_id)).first()
        if row is None:
            return {"merchant_id": merchant_id, "balance_fen": 0, "settled_fen": 0, "fee_fen": 0, "refunded_fen": 0}
        return dict(row._mapping)

    def refund(self, terminal: TerminalRecord, refund_id: str, voucher_id: str,
               amount_fen: int | None) -> dict[str, Any]:
        """Refund part or all of a settled voucher to the wallet's online balance, once per ``refund_id``.

        The total refunded never exceeds the voucher's amount (a conditional update, atomic on both databases).
        Repeating a refund id with the same request answers the first result; with another request, 409.
        """
        if not refund_id or len(refund_id) > 80:
            raise BadRequest("refund_id must be 1 to 80 characters")
        if amount_fen is not None and amount_fen <= 0:
            raise BadRequest("refund amount must be positive")

        def run(conn: Connection) -> dict[str, Any]:
            prior = conn.execute(select(refunds).where(refunds.c.refund_id == refund_id)).first()
            v = conn.execute(select(vouchers).where(vouchers.c.voucher_id == voucher_id)).first()
            if prior is not None:
                if prior.voucher_id != voucher_id or prior.terminal_id != terminal.terminal_id or (
                        amount_fen is not None and amount_fen != prior.amount_fen):
                    raise Conflict(f"refund {refund_id} was already made for another request", "refund_id_reused")
                return _refund_answer(prior, v, replayed=True)
            if v is None:
                raise NotFound(f"voucher {voucher_id} is not settled", "not_settled")
            if v.merchant_id != terminal.merchant_id:
                raise Forbidden(f"voucher {voucher_id} was paid to another merchant", "wrong_payee")
            amount = amount_fen if amount_fen is not None else v.amount_fen - v.refunded_fen
            if amount <= 0:
                raise Conflict(f"voucher {voucher_id} is fully refunded", "over_refund")
            n = conn.execute(update(vouchers).where(and_(
                vouchers.c.voucher_id == voucher_id,
                vouchers.c.refunded_fen + amount <= vouchers.c.amount_fen)).values(
                refunded_fen=vouchers.c.refunded_fen + amount)).rowcount
            if n != 1:
                raise Conflict(f"refund of {amount} fen would exceed what is left of voucher {voucher_id} "
                               f"({v.amount_fen - v.refunded_fen} fen)", "over_refund")
            t = now_ms()
            conn.execute(insert(refunds).values(refund_id=refund_id, voucher_id=voucher_id,
                                                terminal_id=terminal.terminal_id, merchant_id=v.merchant_id,
                                                wallet_id=v.wallet_id, amount_fen=amount,
                                                day=china_day_text(t), created_ms=t))
            conn.execute(update(wallets).where(wallets.c.wallet_id == v.wallet_id)
                         .values(online_fen=wallets.c.online_fen + amount))
            self._credit(conn, v.merchant_id, 0, 0, refunded=amount)
            row = conn.execute(select(refunds).where(refunds.c.refund_id == refund_id)).first()
            v2 = conn.execute(select(vouchers).where(vouchers.c.voucher_id == voucher_id)).first()
            return _refund_answer(row, v2, replayed=False)

        return self._write(run)

    # -- reconciliation ---------------------------------------------------------------------------------------------
    def report(self, terminal: TerminalRecord, day: str) -> dict[str, Any]:
        """The operator's settlement report for one terminal and one (China Standard Time) day."""
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise BadRequest(f"day {day!r} is not YYYY-MM-DD") from None
        tid = terminal.terminal_id
        with read_only(self.engine) as conn:
            settled = conn.execute(select(vouchers.c.voucher_id, vouchers.c.amount_fen, vouchers.c.fee_fen)
                                   .where(and_(vouchers.c.terminal_id == tid, vouchers.c.day == day))
                                   .order_by(vouchers.c.voucher_id)).all()
            rejected = conn.execute(select(rejections.c.voucher_id, rejections.c.amount_fen, rejections.c.reason)
                                    .where(and_(rejections.c.terminal_id == tid, rejections.c.day == day))
                                    .order_by(rejections.c.id)).all()
            refunded = conn.execute(select(refunds.c.refund_id, refunds.c.voucher_id, refunds.c.amount_fen)
                                    .where(and_(refunds.c.terminal_id == tid, refunds.c.day == day))
                                    .order_by(refunds.c.created_ms)).all()
        reasons: dict[str, int] = defaultdict(int)
        for r in rejected:
            reasons[r.reason] += 1
        s_total = sum(r.amount_fen for r in settled)
        fees = sum(r.fee_fen for r in settled)
        r_total = sum(r.amount_fen for r in refunded)
        return {
            "terminal_id": tid, "merchant_id": terminal.merchant_id, "date": day,
            "count": len(settled) + len(rejected), "total_fen": s_total + sum(r.amount_fen for r in rejected),
            "settled": {"count": len(settled), "total_fen": s_total, "fee_fen": fees, "net_fen": s_total - fees},
            "rejected": {"count": len(rejected), "total_fen": sum(r.amount_fen for r in rejected),
                         "reasons": dict(reasons)},
            "refunds": {"count": len(refunded), "total_fen": r_total},
            "vouchers": [[r.voucher_id, r.amount_fen, "settled"] for r in settled]
            + [[r.voucher_id, r.amount_fen, f"rejected:{r.reason}"] for r in rejected],
            "refund_list": [[r.refund_id, r.voucher_id, r.amount_fen] for r in refunded],
        }


def _replayed() -> Unauthenticated:
    return Unauthenticated("request replayed (nonce already used)", "replayed_request")


def _refund_answer(row: Any, v: Any, replayed: bool) -> dict[str, Any]:
    total = v.refunded_fen if v is not None else row.amount_fen
    original = v.amount_fen if v is not None else row.amount_fen
    return {"refund_id": row.refund_id, "voucher_id": row.voucher_id, "status": "refunded",
            "amount_fen": row.amount_fen, "refunded_total_fen": total, "remaining_fen": original - total,
            "wallet_id": row.wallet_id, "day": row.day, "created_ms": row.created_ms, "replayed": replayed}


_VOUCHER_COLUMNS = ("voucher_id", "wallet_id", "counter", "body_hash", "voucher", "amount_fen", "fee_fen",
                    "refunded_fen", "merchant_id", "terminal_id", "timestamp_ms", "day", "settled_ms")
_voucher_inserts: dict[str, tuple[str, bool]] = {}


def _voucher_insert(dialect: Any) -> tuple[str, bool]:
    """The INSERT of a settled voucher for ``dialect``, its parameters in :data:`_VOUCHER_COLUMNS` order when the
    driver's style is positional (True) or by name; compiled once per dialect."""
    key = _dialect_key(dialect)
    hit = _voucher_inserts.get(key)
    if hit is None:
        stmt = insert(vouchers).compile(dialect=dialect, column_keys=list(_VOUCHER_COLUMNS))
        if stmt.positional and tuple(stmt.positiontup or ()) != _VOUCHER_COLUMNS:
            raise RuntimeError(f"voucher INSERT binds {stmt.positiontup}, expected {_VOUCHER_COLUMNS}")
        hit = _voucher_inserts[key] = (str(stmt), bool(stmt.positional))
    return hit


_dml_texts: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def _execute(conn: Connection, name: str, build: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """Run the statement ``build()`` (named bind parameters only) straight through the driver, once or for each
    parameter set: compiled once per dialect, without SQLAlchemy's per-execution parameter processing."""
    key = (_dialect_key(conn.dialect), name)
    hit = _dml_texts.get(key)
    if hit is None:
        compiled = build().compile(dialect=conn.dialect)
        hit = _dml_texts[key] = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
    sql, order = hit
    if order is not None:
        if isinstance(params, dict):
            return conn.exec_driver_sql(sql, tuple(params[k] for k in order))
        return conn.exec_driver_sql(sql, [tuple(p[k] for k in order) for p in params])
    return conn.exec_driver_sql(sql, params)


def _wallet_spent() -> Any:
    return update(wallets).where(wallets.c.wallet_id == bindparam("w")).values(
        spent_fen=wallets.c.spent_fen + bindparam("d"))


def _account_credit() -> Any:
    c = accounts.c
    return update(accounts).where(c.merchant_id == bindparam("m")).values(
        balance_fen=c.balance_fen + bindparam("net"), settled_fen=c.settled_fen + bindparam("gross"),
        fee_fen=c.fee_fen + bindparam("fees"), refunded_fen=c.refunded_fen + bindparam("refunded"))


def _account_open() -> Any:
    return insert(accounts).values(merchant_id=bindparam("m"), balance_fen=bindparam("net"),
                                   settled_fen=bindparam("gross"), fee_fen=bindparam("fees"),
                                   refunded_fen=bindparam("refunded"))


def _insert_ignore(conn: Connection, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


# The settlement path's lookups by key lists, written once as SQLAlchemy Core (one text for both databases).
def _settled_bodies(ids: list[Any]) -> Any:
    return select(vouchers.c.voucher_id, vouchers.c.body_hash).where(vouchers.c.voucher_id.in_(ids))


def _prior_rejections(hashes: list[Any]) -> Any:
    return select(rejections.c.voucher_hash, rejections.c.reason).where(
        rejections.c.voucher_hash.in_(hashes), rejections.c.terminal_id == bindparam("terminal_id"))


def _daily_totals(wids: list[Any], days: list[Any]) -> Any:
    return (select(vouchers.c.wallet_id, vouchers.c.day, func.sum(vouchers.c.amount_fen))
            .where(vouchers.c.wallet_id.in_(wids), vouchers.c.day.in_(days))
            .group_by(vouchers.c.wallet_id, vouchers.c.day))


def _wallet_rows(wids: list[Any]) -> Any:
    return select(wallets.c.wallet_id, wallets.c.loaded_fen, wallets.c.spent_fen, wallets.c.status).where(
        wallets.c.wallet_id.in_(wids))


IN_CHUNK = 512  # values per IN list (SQLite bounds the number of parameters of a statement)
_selects: dict[tuple[str, str, tuple[int, ...]], tuple[str, tuple[str, ...] | None]] = {}


def _dialect_key(dialect: Any) -> str:
    return f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"


@functools.lru_cache(maxsize=64)
def _bind_names(k: int, n: int) -> tuple[str, ...]:
    return tuple(f"in{k}_{m}" for m in range(n))


def _select_in(conn: Connection, name: str, build: Any, values: Iterable[Any], *lists: Sequence[Any],
               for_update: bool = False, **params: Any) -> list[Any]:
    """The rows of ``build(values, *lists)`` (a SELECT with ``IN`` lists), ``values`` deduplicated and in chunks.

    SQLAlchemy renders a 500-value IN list again at every execution, which costs more than the query. So each
    query is compiled once per dialect and list sizes (rounded up to a power of two, padded by repeating a value,
    which an IN list does not notice) and its SQL text runs straight through the driver with ``params`` by name.
    ``for_update`` locks the rows on databases that lock rows (SQLite's write transaction already excludes others).
    """
    vals = list(dict.fromkeys(v for v in values if v is not None))
    others = [list(dict.fromkeys(v for v in lst if v is not None)) for lst in lists]
    if not vals or not all(others):
        return []
    out: list[Any] = []
    for i in range(0, len(vals), IN_CHUNK):
        in_lists = [vals[i:i + IN_CHUNK], *others]
        sizes = tuple(1 << (len(lst) - 1).bit_length() for lst in in_lists)
        sql, order = _compiled_select(conn.dialect, name, build, sizes, for_update)
        bound = dict(params)
        for k, (lst, n) in enumerate(zip(in_lists, sizes, strict=True)):
            bound.update(zip(_bind_names(k, n), lst + [lst[-1]] * (n - len(lst)), strict=True))
        out.extend(conn.exec_driver_sql(sql, tuple(bound[b] for b in order) if order is not None else bound).all())
    return out


def _compiled_select(dialect: Any, name: str, build: Any, sizes: tuple[int, ...],
                     for_update: bool = False) -> tuple[str, tuple[str, ...] | None]:
    """The SQL text of ``build`` with IN lists of ``sizes`` bind parameters, and the parameter order when the
    driver's style is positional; compiled once per dialect."""
    key = (_dialect_key(dialect), name + ":for_update" * for_update, sizes)
    hit = _selects.get(key)
    if hit is None:
        query = build(*[[bindparam(b) for b in _bind_names(k, n)] for k, n in enumerate(sizes)])
        if for_update and dialect.name != "sqlite":
            query = query.with_for_update()
        compiled = query.compile(dialect=dialect)
        hit = _selects[key] = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
    return hit


def _precompile(dialect: Any) -> None:
    """Compile the settlement path's IN-list queries for every list size a batch can bring (see
    :func:`_select_in`), as the operator starts rather than in its first batches."""
    n = 1
    while n <= IN_CHUNK:
        _compiled_select(dialect, "settled_bodies", _settled_bodies, (n,))
        _compiled_select(dialect, "prior_rejections", _prior_rejections, (n,))
        _compiled_select(dialect, "wallet_states", _wallet_rows, (n,), for_update=True)
        for days in (1, 2):
            _compiled_select(dialect, "daily_totals", _daily_totals, (n, days))
        n *= 2
    _voucher_insert(dialect)


def parse_certificate(der: bytes) -> x509.Certificate:
    """A DER certificate, or :class:`BadRequest`."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise BadRequest(f"certificate does not parse: {exc}") from None
