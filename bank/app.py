"""The operator's HTTP API (FastAPI). OpenAPI at ``/openapi.json``, health at ``/healthz``.

Terminal calls (``/v1/settlements``, ``/v1/denylist``, ``/v1/refunds``, ``/v1/reports``) are signed with the
terminal key (:mod:`wire.signing`). Back-office calls (``/v1/admin/...``) carry ``Authorization: Bearer <token>``.
The caller is authenticated before a request body is read (a terminal's headers first, then the signature over the
body), bodies are capped (:mod:`bank.guard`), and every error is a 4xx/5xx with a typed body
``{"error": {"code", "message"}}``; a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import binascii
from dataclasses import replace
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from bank.auth import TerminalRecord
from bank.guard import BodyGuard, install_handlers
from bank.service import Operator
from wire import batch
from wire.batch import UploadItem
from wire.claims import DiscountClaim
from wire.errors import BadRequest, Forbidden, OperatorError, UnsupportedMediaType
from wire.models import (
    AccountAnswer,
    DenylistAnswer,
    ErrorAnswer,
    Health,
    LoadAnswer,
    LoadTokenAnswer,
    LoadTokenRequest,
    ProvisionAnswer,
    ProvisionRequest,
    RefundAnswer,
    RefundRequest,
    ReportAnswer,
    SettlementAnswer,
    SettlementRequest,
    TerminalStatus,
    WalletAnswer,
    WalletRegistered,
    WalletRequest,
)

M = TypeVar("M", bound=BaseModel)
_DESCRIPTIONS = {400: "malformed or out of range", 401: "not authenticated", 403: "not allowed", 404: "not found",
                 409: "conflicts with what is on file", 413: "body over the size cap",
                 415: "unsupported body format", 500: "unexpected failure (rolled back)",
                 503: "database unavailable (nothing changed; see Retry-After)"}
_ALWAYS = (400, 401, 500, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that may answer ``statuses`` (and 400, 401, 500, 503) as typed errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*_ALWAYS, *statuses}):
        out[status] = {"model": ErrorAnswer, "description": _DESCRIPTIONS[status]}
        if status == 503:
            out[status]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                      "description": "seconds to wait before trying again"}}
    return out


WALLET_ID = Annotated[str, Path(pattern=r"^\d{16}$")]
TERMINAL_ID = Annotated[str, Path(pattern=r"^[A-Z0-9]{8}$")]
MERCHANT_ID = Annotated[str, Path(pattern=r"^\d{15}$")]
DAY = Annotated[str, Path(pattern=r"^\d{4}-\d{2}-\d{2}$")]
LOAD_COUNTER = Annotated[int, Path(ge=1, le=0xFFFFFFFF)]
SINCE_MAX = 2**63 - 1


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined (for a request body documented by hand)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except (ValueError, binascii.Error):
        raise BadRequest("not hex") from None


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` as a ``model`` (JSON); :class:`BadRequest` naming the first problem when it is not one."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems: list[Any] = list(exc.errors())
        first: dict[str, Any] = dict(problems[0]) if problems else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequest(f"{where or 'body'}: {first.get('msg', 'invalid')}") from None


def _settlement_items(body: bytes) -> list[UploadItem]:
    """The vouchers of a settlement request body, with their certificates; :class:`BadRequest` when malformed."""
    req = parse_body(SettlementRequest, body)
    certs = {fp: _hex(der) for fp, der in req.certificates.items()}
    items = []
    for v in req.vouchers:
        if v.cert not in certs or v.issuer not in certs:
            raise BadRequest(f"certificate {v.cert if v.cert not in certs else v.issuer} not in the request")
        claim = None
        if v.claim is not None:
            claim = DiscountClaim(v.claim.campaign_id, v.claim.gross_fen, v.claim.discount_fen, _hex(v.claim.signature))
            claim.check()
        items.append(UploadItem(_hex(v.voucher), certs[v.cert], certs[v.issuer], claim))
    return items


def _body_parser(content_type: str | None) -> Any:
    """The parser of a settlement body by its content type: JSON (also when none is given) or the binary batch."""
    kind = (content_type or "application/json").partition(";")[0].strip().lower()
    if kind == "application/json":
        return _settlement_items
    if kind == batch.CONTENT_TYPE:
        return batch.decode_batch
    raise UnsupportedMediaType(f"settlement bodies are application/json or {batch.CONTENT_TYPE}, not {kind!r}")




DENYLIST_VERSION_PARAM = {
    "name": "denylist_version", "in": "query", "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": SINCE_MAX},
    "description": "the denylist version the terminal had when it took these vouchers (signed with the query); a "
                   "voucher of a wallet that version revoked is rejected wallet_revoked. Absent: 0"}


def _declared_version(request: Request) -> int:
    """The ``denylist_version`` of a settlement's (signed) query: 0 when absent; :class:`BadRequest` when it is not
    one integer in 0..2^63-1. Read once the request is authenticated."""
    values = request.query_params.getlist("denylist_version")
    if not values:
        return 0
    text = values[0]
    if len(values) > 1 or not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > SINCE_MAX:
        raise BadRequest("denylist_version must be one integer from 0 to 2^63-1")
    return int(text)


def _settle(op: Operator, term: TerminalRecord, items: list[UploadItem]) -> tuple[list[dict[str, Any]], int]:
    """Settle a batch and read the denylist version after it (one trip to a worker thread)."""
    return op.settle(term, items), op.denylist_version()


async def _terminal(request: Request) -> TerminalRecord:
    """Authenticate a signed terminal request (see :mod:`wire.signing`): its headers before its body is read, then
    the signature over the body (kept as ``request.state.body``); the nonce is recorded."""
    op: Operator = request.app.state.operator
    pending = await run_in_threadpool(op.precheck, _headers(request))
    body = request.state.body = await request.body()
    return await run_in_threadpool(op.verify_request, pending, request.method, request.url.path, request.url.query,
                                   body)


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = authorization.removeprefix("Bearer ").strip() if authorization else None
    request.app.state.operator.check_admin(token)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` documenting a JSON request body of ``model`` (read by hand, after authentication)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline_schema(model)}}}}


Terminal = Annotated[TerminalRecord, Depends(_terminal)]
ADMIN = [Depends(_admin)]


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document without FastAPI's 422 (the API answers a malformed request 400, typed)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for item in schema.get("paths", {}).values():
            for op in item.values():
                if isinstance(op, dict):
                    op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(op: Operator) -> FastAPI:
    """The ASGI app over one :class:`Operator`."""
    app = FastAPI(title="ecny-pos operator", version="1",
                  description="Settlement, denylist, refunds and reports for e-CNY terminals (simulator).")
    app.state.operator = op
    app.add_middleware(BodyGuard, limits=op.limits)
    install_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/healthz", response_model=Health, responses=errors())
    def healthz() -> Health:
        return Health(status="ok")

    @app.post("/v1/settlements", response_model=SettlementAnswer, responses=errors(403, 413, 415),
              openapi_extra={"parameters": [DENYLIST_VERSION_PARAM], "requestBody": {"required": True, "content": {
                  "application/json": {"schema": _inline_schema(SettlementRequest)},
                  batch.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary",
                                                  "description": "the binary batch (see wire/batch.py)"}}}}})
    async def settle(request: Request) -> Any:
        """Upload a batch of vouchers; one answer per voucher, in order. Safe to repeat.

        The body is a :class:`SettlementRequest` (``application/json``) or the same batch in binary
        (``application/vnd.ecny.settlement-batch``, :mod:`wire.batch`: what terminals send); another content type is
        a 415. The request's headers are checked first (a request not signed by a known, active terminal is refused
        before its body is read); then, while the signature over the body is checked on a worker thread, the body is
        parsed from the raw bytes. A body error is answered only once the request is known to be authentic. The
        nonce is recorded in the batch's own transaction: one durable commit per batch.
        """
        pending = await run_in_threadpool(op.precheck, _headers(request))
        body = await request.body()
        auth = asyncio.ensure_future(run_in_threadpool(op.verify_request, pending, request.method,
                                                       request.url.path, request.url.query, body, False))
        await asyncio.sleep(0)  # let it reach its worker thread
        try:
            items: list[UploadItem] | OperatorError = _body_parser(request.headers.get("content-type"))(body)
        except OperatorError as exc:
            items = exc
        term = await auth
        if isinstance(items, OperatorError):
            raise items
        term = replace(term, denylist_version=_declared_version(request))
        results, version = await run_in_threadpool(_settle, op, term, items)
        return JSONResponse({"results": results, "denylist_version": version})

    @app.get("/v1/denylist", response_model=DenylistAnswer, responses=errors(403))
    def get_denylist(term: Terminal, since: Annotated[int, Query(ge=0, le=SINCE_MAX)] = 0) -> DenylistAnswer:
        """Denylist changes after version ``since``."""
        return op.denylist_since(since)

    @app.post("/v1/refunds", response_model=RefundAnswer, responses=errors(403, 404, 409, 413),
              openapi_extra=_json_body(RefundRequest))
    def refund(request: Request, term: Terminal) -> RefundAnswer:
        """Refund part or all of a settled voucher to the wallet's online balance (idempotent by refund_id).

        The refund id starts with the terminal's own id and a dash (``CMGQ0001-...``); the voucher was paid at the
        terminal's merchant."""
        req = parse_body(RefundRequest, request.state.body)
        return op.refund(term, req.refund_id, req.voucher_id, req.amount_fen)

    @app.get("/v1/reports/{terminal_id}/{day}", response_model=ReportAnswer, responses=errors(403, 404))
    def report(terminal_id: TERMINAL_ID, day: DAY, term: Terminal) -> ReportAnswer:
        """The settlement report of one terminal for one China Standard Time day (only the terminal's own)."""
        if terminal_id != term.terminal_id:
            raise Forbidden("a terminal may read only its own reports", "not_your_report")
        return op.report(term, day)

    @app.post("/v1/admin/terminals", dependencies=ADMIN, response_model=ProvisionAnswer,
              responses=errors(403, 404, 413), openapi_extra=_json_body(ProvisionRequest))
    async def provision(request: Request) -> ProvisionAnswer:
        """Certify a terminal's key (back office)."""
        req = parse_body(ProvisionRequest, await request.body())
        return await run_in_threadpool(op.provision_terminal, req.terminal_id, req.public_key_pem.encode())

    @app.post("/v1/admin/terminals/{terminal_id}/revoke", dependencies=ADMIN, response_model=TerminalStatus,
              responses=errors(404, 413))
    def revoke_terminal(terminal_id: TERMINAL_ID) -> TerminalStatus:
        return op.revoke_terminal(terminal_id)

    @app.post("/v1/admin/wallets", dependencies=ADMIN, response_model=WalletRegistered,
              responses=errors(403, 409, 413), openapi_extra=_json_body(WalletRequest))
    async def register_wallet(request: Request) -> WalletRegistered:
        """Put a newly issued wallet on file with its opening balance."""
        req = parse_body(WalletRequest, await request.body())
        return await run_in_threadpool(op.register_wallet, req.wallet_id, req.tier, _hex(req.certificate),
                                       req.opening_balance_fen)

    @app.get("/v1/admin/wallets/{wallet_id}", dependencies=ADMIN, response_model=WalletAnswer, responses=errors(404))
    def get_wallet(wallet_id: WALLET_ID) -> WalletAnswer:
        return op.wallet(wallet_id)

    @app.post("/v1/admin/wallets/{wallet_id}/load-tokens", dependencies=ADMIN, response_model=LoadTokenAnswer,
              responses=errors(403, 404, 413), openapi_extra=_json_body(LoadTokenRequest))
    async def load_token(wallet_id: WALLET_ID, request: Request) -> LoadTokenAnswer:
        """A signed load token for the wallet (the card refuses replays by load counter). It counts as loaded once
        confirmed (``.../loads/{load_counter}/confirm``) or proven by a later voucher; a refused one is cancelled."""
        req = parse_body(LoadTokenRequest, await request.body())
        token = await run_in_threadpool(op.issue_load_token, wallet_id, req.amount_fen, req.after_counter)
        return LoadTokenAnswer(wallet_id=wallet_id, load_counter=token.load_counter, amount_fen=token.amount_fen,
                               token=token.encode().hex())

    @app.post("/v1/admin/wallets/{wallet_id}/loads/{load_counter}/confirm", dependencies=ADMIN,
              response_model=LoadAnswer, responses=errors(404, 409, 413))
    def confirm_load(wallet_id: WALLET_ID, load_counter: LOAD_COUNTER) -> LoadAnswer:
        """The card took this load (it answered LOAD OK): it counts as loaded from now on. Idempotent."""
        return op.confirm_load(wallet_id, load_counter)

    @app.post("/v1/admin/wallets/{wallet_id}/loads/{load_counter}/cancel", dependencies=ADMIN,
              response_model=LoadAnswer, responses=errors(404, 409, 413))
    def cancel_load(wallet_id: WALLET_ID, load_counter: LOAD_COUNTER) -> LoadAnswer:
        """The card refused this load: it never counts as loaded. Idempotent; 409 once it was confirmed."""
        return op.cancel_load(wallet_id, load_counter)

    @app.get("/v1/admin/accounts/{merchant_id}", dependencies=ADMIN, response_model=AccountAnswer,
             responses=errors(404))
    def account(merchant_id: MERCHANT_ID) -> AccountAnswer:
        """A merchant's account: settled, fees, refunds, balance (fen)."""
        return op.account(merchant_id)

    from bank.campaign_routes import add_campaign_routes  # it builds on this module's helpers
    from bank.merchant_routes import add_merchant_routes  # it builds on this module's helpers
    from bank.reconcile_routes import add_reconcile_routes  # its routes use this module's helpers
    from bank.ticket_routes import add_ticket_routes  # here: that module builds on this one's helpers

    add_merchant_routes(app, op)
    add_reconcile_routes(app, op)
    add_ticket_routes(app, op)
    add_campaign_routes(app, op)
    return app
