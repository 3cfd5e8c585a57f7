"""The terminal's HTTP client for the operator: signed requests, retries with exponential backoff and jitter.

Every terminal call is signed with the terminal key (scheme in :mod:`wire.signing`); back-office calls (provisioning,
wallet registration, load tokens) carry the operator's admin token. ``transport`` is the seam for tests: pass any
``httpx.BaseTransport`` (e.g. one that injects timeouts, 500s or truncated answers). Answers come back as the
models of :mod:`wire.models`.

Where the operator cannot be reached, the tester tools fall back to the home's operator in-process: a
:data:`LocalOperator` they are given, by default :func:`embedded_back_office` (built by :mod:`pos.composition`).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from wallet import clock
from wallet.errors import EcnyError, InvalidInput, WalletIdTaken
from wallet.keys import key_from_pem
from wallet.protocol import LoadToken
from wire import signing
from wire.admin_token import load_admin_token
from wire.batch import CONTENT_TYPE as BATCH_CONTENT_TYPE
from wire.models import (
    AccountAnswer,
    DenylistAnswer,
    LoadAnswer,
    LoadTokenAnswer,
    ProvisionAnswer,
    RefundAnswer,
    ReportAnswer,
    SettlementAnswer,
    TerminalStatus,
    WalletAnswer,
    WalletRegistered,
    WireModel,
)

if TYPE_CHECKING:
    from pos.home import Home

__all__ = ["ClockSkew", "NotProvisioned", "OperatorBadInput", "OperatorClient", "OperatorRefused",
           "OperatorUnavailable", "RetryPolicy", "provision_terminal"]

M = TypeVar("M", bound=WireModel)
CLOCK_SKEW = "clock_skew"  # the operator's code for a request time too far from its clock

ENV_URL = "POS_OPERATOR_URL"
ENV_ADMIN_TOKEN = "POS_OPERATOR_ADMIN_TOKEN"  # noqa: S105 - the name of a variable, not a secret


class OperatorUnavailable(EcnyError):
    """The operator could not be reached or kept failing (network error, timeout, 5xx, cut-off answer)."""


class OperatorRefused(EcnyError):
    """The operator answered with a 4xx error. ``status`` and ``code`` say which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"operator refused ({status} {code}): {message}")
        self.status = status
        self.code = code


class OperatorBadInput(OperatorRefused, InvalidInput):
    """The operator found the request malformed or the thing asked for unknown (400, 404)."""


class WalletIdRefused(OperatorRefused, WalletIdTaken):
    """The operator has the wallet id on file with another certificate (409 ``wallet_exists``)."""

    def __init__(self, wallet_id: str, message: str) -> None:
        super().__init__(409, "wallet_exists", message)
        self.wallet_ids = (wallet_id,)


class ClockSkew(OperatorRefused):
    """The operator refused the request's time even after the client corrected its clock by the operator's
    (``offset_ms``: operator − terminal, None when the answer did not say the operator's time)."""

    def __init__(self, status: int, code: str, message: str, offset_ms: int | None) -> None:
        super().__init__(status, code, message)
        self.offset_ms = offset_ms


class NotProvisioned(InvalidInput):
    """The terminal has no key and certificate yet (``pos terminal provision TID``)."""


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)) seconds."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


class BackOffice(Protocol):
    """The back-office calls of an operator in-process (what the offline fallbacks need)."""

    def provision_terminal(self, terminal_id: str, public_key_pem: bytes) -> ProvisionAnswer: ...

    def register_wallet(self, wallet_id: str, tier: int, certificate: bytes,
                        opening_fen: int) -> WalletRegistered: ...

    def issue_load_token(self, wallet_id: str, amount_fen: int, after_counter: int = 0) -> LoadToken: ...

    def confirm_load(self, wallet_id: str, load_counter: int) -> LoadAnswer: ...

    def cancel_load(self, wallet_id: str, load_counter: int) -> LoadAnswer: ...


LocalOperator = Callable[["Home"], AbstractContextManager[BackOffice]]


def embedded_back_office(home: Home) -> AbstractContextManager[BackOffice]:
    """The home's embedded operator in-process, as the composition root builds it (the default
    :data:`LocalOperator`)."""
    from pos.composition import local_operator

    return local_operator(home)


def admin_token_path(home: Home) -> Path:
    """Where the home's operator keeps its back-office token."""
    return home.root / "pki" / "admin.token"


def resolve_url(home: Home, explicit: str | None = None) -> str:
    """``--operator URL``, else ``POS_OPERATOR_URL``, else merchants.yaml's operator url."""
    url = explicit or os.environ.get(ENV_URL) or home.config.operator.url
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"operator URL {url!r} must look like http://host:port")
    return url.rstrip("/")


def terminal_key_path(home: Home, terminal_id: str) -> Path:
    return home.terminal_dir(terminal_id) / "terminal.key"


class OperatorClient:
    """Calls to one operator. Use as a context manager or call :meth:`close`."""

    def __init__(self, url: str, terminal_id: str | None = None, key: ec.EllipticCurvePrivateKey | None = None,
                 admin_token: str | None = None, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0, retry: RetryPolicy | None = None) -> None:
        self.url = url.rstrip("/")
        self.prefix = urllib.parse.urlparse(self.url).path
        self.terminal_id = terminal_id
        self.key = key
        self.admin_token = admin_token
        self.retry = retry or RetryPolicy()
        # plain http never uses TLS: skip loading the CA bundle (~60 ms a client, most of a local request's cost)
        self.http = httpx.Client(base_url=self.url, transport=transport, timeout=timeout,
                                 verify=self.url.startswith("https:"))
        self.correction_ms = 0  # added to the terminal's clock when it signs (the offset learnt so far)
        self.offset_ms: int | None = None  # the offset measured from the last answer (operator − terminal)
        self.operator_ms: int | None = None  # the operator's time in that answer

    @classmethod
    def for_terminal(cls, home: Home, terminal_id: str, operator_url: str | None = None,
                     transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
                     timeout: float = 10.0) -> OperatorClient:
        """A client that signs as ``terminal_id`` with its key under HOME/terminals/TID/."""
        home.terminal(terminal_id)
        path = terminal_key_path(home, terminal_id)
        if not path.exists():
            raise NotProvisioned(f"terminal {terminal_id} has no key yet: run `pos terminal provision {terminal_id}`")
        from pos.sync import clockskew

        cli = cls(resolve_url(home, operator_url), terminal_id, key_from_pem(path.read_bytes()),
                  transport=transport, retry=retry, timeout=timeout)
        known = clockskew.load(home, terminal_id)
        if known is not None and abs(known.offset_ms) > signing.MAX_SKEW_MS // 2:
            cli.correction_ms = known.offset_ms  # sign with the time the operator will accept
        return cli

    @classmethod
    def for_admin(cls, home: Home, operator_url: str | None = None, transport: httpx.BaseTransport | None = None,
                  retry: RetryPolicy | None = None, timeout: float = 10.0) -> OperatorClient:
        """A back-office client: token from ``POS_OPERATOR_ADMIN_TOKEN``, else HOME/pki/admin.token."""
        token = os.environ.get(ENV_ADMIN_TOKEN) or load_admin_token(admin_token_path(home))
        return cls(resolve_url(home, operator_url), admin_token=token, transport=transport, retry=retry,
                   timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one request path ---------------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, signed: bool = True, *, content: bytes | None = None,
             content_type: str = "application/json", cancel: threading.Event | None = None) -> dict[str, Any]:
        """Send one request, retrying transport errors, timeouts, 5xx and cut-off answers; return the JSON.

        The body is ``body`` as JSON, or ``content`` as given (of ``content_type``); the signature covers its bytes.
        Once ``cancel`` is set no further attempt is made (:class:`OperatorUnavailable`).
        """
        return self._send(dict, method, path, body, params, signed, content, content_type, cancel)

    def _call(self, model: type[M], method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None, signed: bool = True, *, content: bytes | None = None,
              content_type: str = "application/json", cancel: threading.Event | None = None) -> M:
        """:meth:`call`, the answer parsed into ``model``; an answer that does not fit is retried as a cut-off one."""
        return self._send(model.model_validate, method, path, body, params, signed, content, content_type, cancel)

    def _send(self, parse: Callable[[dict[str, Any]], Any], method: str, path: str, body: dict[str, Any] | None,
              params: dict[str, Any] | None, signed: bool, content: bytes | None, content_type: str,
              cancel: threading.Event | None) -> Any:
        if content is None:
            content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        elif body is not None:
            raise ValueError("give a JSON body or raw content, not both")
        query = urllib.parse.urlencode(params or {})
        target = path + (f"?{query}" if query else "")
        last = "no attempt made"
        corrected = False
        attempt = 0
        while attempt < self.retry.attempts:
            if attempt:
                self.retry.sleep(self.retry.delay(attempt - 1))
            attempt += 1
            if cancel is not None and cancel.is_set():
                raise OperatorUnavailable(f"request to {self.url} given up ({last})")
            headers = {"content-type": content_type} if content else {}
            if signed:
                if self.key is None or self.terminal_id is None:
                    raise NotProvisioned("this client has no terminal key")
                headers.update(signing.sign_request(self.key, self.terminal_id, method, self.prefix + path, query,
                                                 content, correction_ms=self.correction_ms))
            elif self.admin_token:
                headers["authorization"] = f"Bearer {self.admin_token}"
            sent = clock.now_ms()
            try:
                resp = self.http.request(method, target, content=content or None, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            self._learn(resp, sent)
            if resp.status_code >= 500 or resp.status_code == 429:
                last = f"HTTP {resp.status_code}"
                continue
            try:
                data = resp.json()
            except ValueError:
                last = f"HTTP {resp.status_code} with a cut-off or non-JSON body"
                continue
            if resp.status_code >= 400:
                err = data.get("error", {}) if isinstance(data, dict) else {}
                if resp.status_code == 401 and err.get("code") == CLOCK_SKEW:
                    if not corrected and self.offset_ms is not None:
                        corrected, self.correction_ms = True, self.offset_ms  # re-sign with the operator's time
                        attempt -= 1
                        continue
                    raise ClockSkew(401, CLOCK_SKEW, str(err.get("message", "")), self.offset_ms)
                cls = OperatorBadInput if resp.status_code in (400, 404, 422) else OperatorRefused
                raise cls(resp.status_code, str(err.get("code", "error")), str(err.get("message", resp.text[:200])))
            if not isinstance(data, dict):
                last = "answer is not a JSON object"
                continue
            try:
                return parse(data)
            except ValidationError as exc:
                last = f"answer does not fit the contract: {exc.errors()[0].get('msg', 'invalid')}"
        raise OperatorUnavailable(f"operator at {self.url} unavailable after {self.retry.attempts} attempts: {last}")

    def _learn(self, resp: httpx.Response, sent_ms: int) -> None:
        """The clock offset from an answer's operator time (answers without one teach nothing)."""
        text = resp.headers.get(signing.H_OPERATOR_TIME)
        if text is None or not text.isascii() or not text.isdigit() or len(text) > 15:
            return
        self.operator_ms = int(text)
        self.offset_ms = signing.offset_from(self.operator_ms, sent_ms, clock.now_ms())

    # -- terminal calls ---------------------------------------------------------------------------------------------
    def settle(self, vouchers: list[dict[str, str]], certificates: dict[str, str]) -> SettlementAnswer:
        """Upload vouchers as the JSON body (hex vouchers, certificates by fingerprint)."""
        return self._call(SettlementAnswer, "POST", "/v1/settlements",
                          {"vouchers": vouchers, "certificates": certificates})

    def settle_batch(self, body: bytes, cancel: threading.Event | None = None,
                     denylist_version: int | None = None) -> SettlementAnswer:
        """Upload a binary settlement batch (:func:`wire.batch.encode_batch`): what :func:`pos.sync.upload.sync_once`
        sends. ``cancel`` as in :meth:`call`; ``denylist_version``: the version the terminal had when it took these
        vouchers (in the signed query)."""
        return self._call(SettlementAnswer, "POST", "/v1/settlements", content=body,
                          params=None if denylist_version is None else {"denylist_version": denylist_version},
                          content_type=BATCH_CONTENT_TYPE, cancel=cancel)

    def denylist(self, since: int) -> DenylistAnswer:
        return self._call(DenylistAnswer, "GET", "/v1/denylist", params={"since": since})

    def refund(self, refund_id: str, voucher_id: str, amount_fen: int | None) -> RefundAnswer:
        return self._call(RefundAnswer, "POST", "/v1/refunds", {"refund_id": refund_id, "voucher_id": voucher_id,
                                                                 "amount_fen": amount_fen})

    def report(self, day: str) -> ReportAnswer:
        return self._call(ReportAnswer, "GET", f"/v1/reports/{self.terminal_id}/{day}")

    # -- back-office calls ------------------------------------------------------------------------------------------
    def provision(self, terminal_id: str, public_key_pem: str) -> ProvisionAnswer:
        return self._call(ProvisionAnswer, "POST", "/v1/admin/terminals",
                          {"terminal_id": terminal_id, "public_key_pem": public_key_pem}, signed=False)

    def revoke_terminal(self, terminal_id: str) -> TerminalStatus:
        return self._call(TerminalStatus, "POST", f"/v1/admin/terminals/{terminal_id}/revoke", {}, signed=False)

    def register_wallet(self, wallet_id: str, tier: int, certificate: bytes, opening_fen: int) -> WalletRegistered:
        """Put a wallet on file; :class:`WalletIdRefused` when its id is on file with another certificate."""
        try:
            return self._call(WalletRegistered, "POST", "/v1/admin/wallets", {
                "wallet_id": wallet_id, "tier": tier, "certificate": certificate.hex(),
                "opening_balance_fen": opening_fen}, signed=False)
        except OperatorRefused as exc:
            if exc.code != "wallet_exists":
                raise
            raise WalletIdRefused(wallet_id, str(exc).split(": ", 1)[-1]) from None

    def wallet(self, wallet_id: str) -> WalletAnswer:
        return self._call(WalletAnswer, "GET", f"/v1/admin/wallets/{wallet_id}", signed=False)

    def load_token(self, wallet_id: str, amount_fen: int, after_counter: int) -> LoadTokenAnswer:
        return self._call(LoadTokenAnswer, "POST", f"/v1/admin/wallets/{wallet_id}/load-tokens",
                          {"amount_fen": amount_fen, "after_counter": after_counter}, signed=False)

    def confirm_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        """The card took load ``load_counter``: the operator counts it as loaded from now on."""
        return self._call(LoadAnswer, "POST", f"/v1/admin/wallets/{wallet_id}/loads/{load_counter}/confirm", {},
                          signed=False)

    def cancel_load(self, wallet_id: str, load_counter: int) -> LoadAnswer:
        """The card refused load ``load_counter``: the operator never counts it."""
        return self._call(LoadAnswer, "POST", f"/v1/admin/wallets/{wallet_id}/loads/{load_counter}/cancel", {},
                          signed=False)

    def account(self, merchant_id: str) -> AccountAnswer:
        return self._call(AccountAnswer, "GET", f"/v1/admin/accounts/{merchant_id}", signed=False)


def provision_terminal(home: Home, terminal_id: str, operator_url: str | None = None,
                       transport: httpx.BaseTransport | None = None,
                       local: LocalOperator = embedded_back_office) -> dict[str, Any]:
    """Give a terminal a fresh P-256 key and an operator certificate (HOME/terminals/TID/terminal.key, .pem).

    Asks the operator's back office over HTTP; when it cannot be reached, certifies with ``local`` (by default the
    embedded operator: the CA under HOME/pki and the embedded database), so a demo works offline. The key never
    leaves the terminal.
    """
    from cryptography.hazmat.primitives import serialization

    from wallet.files import write_atomic
    from wallet.keys import key_to_pem, new_key

    home.terminal(terminal_id)
    key = new_key()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    via = "operator"
    try:
        with OperatorClient.for_admin(home, operator_url, transport=transport, retry=RetryPolicy(attempts=2),
                                      timeout=5.0) as cli:
            answer = cli.provision(terminal_id, pub)
    except OperatorUnavailable:
        via = "local"
        with local(home) as op:
            answer = op.provision_terminal(terminal_id, pub.encode())
    directory = home.terminal_dir(terminal_id)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "terminal.key", key_to_pem(key), mode=0o600)
    write_atomic(directory / "terminal.pem", answer.certificate.encode())
    write_atomic(directory / "chain.pem", (answer.chain + answer.root).encode())
    return {"terminal_id": terminal_id, "merchant_id": answer.merchant_id, "provisioned_by": via,
            "certificate": str(directory / "terminal.pem"), "key": str(directory / "terminal.key")}
