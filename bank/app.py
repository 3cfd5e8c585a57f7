"""The operator's HTTP API (FastAPI). OpenAPI at ``/openapi.json``, health at ``/healthz``.

Terminal calls (``/v1/settlements``, ``/v1/denylist``, ``/v1/refunds``, ``/v1/reports``) are signed with the
terminal key (:mod:`wire.signing`). Back-office calls (``/v1/admin/...``) carry ``Authorization: Bearer <token>``.
Every error is a 4xx/5xx with a typed body ``{"error": {"code", "message"}}``; a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import binascii
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from bank.auth import TerminalRecord
from bank.service import Operator
from wallet.errors import EcnyError, InvalidInput
from wire import batch
from wire.batch import UploadItem
from wire.errors import BadRequest, Forbidden, OperatorError, UnsupportedMediaType
from wire.models import (
    AccountAnswer,
    DenylistAnswer,
    ErrorAnswer,
    Health,
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

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer} for status in (400, 401, 403, 404, 409, 415)}

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


def _settlement_items(body: bytes) -> list[UploadItem]:
    """The vouchers of a settlement request body, with their certificates; :class:`BadRequest` when malformed."""
    try:
        req = SettlementRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequest(f"{where}: {first.get('msg', 'invalid')}") from None
    certs = {fp: _hex(der) for fp, der in req.certificates.items()}
    items = []
    for v in req.vouchers:
        if v.cert not in certs or v.issuer not in certs:
            raise BadRequest(f"certificate {v.cert if v.cert not in certs else v.issuer} not in the request")
        items.append(UploadItem(_hex(v.voucher), certs[v.cert], certs[v.issuer]))
    return items


def _body_parser(content_type: str | None) -> Any:
    """The parser of a settlement body by its content type: JSON (also when none is given) or the binary batch."""
    kind = (content_type or "application/json").partition(";")[0].strip().lower()
    if kind == "application/json":
        return _settlement_items
    if kind == batch.CONTENT_TYPE:
        return batch.decode_batch
    raise UnsupportedMediaType(f"settlement bodies are application/json or {batch.CONTENT_TYPE}, not {kind!r}")


def _settle(op: Operator, term: TerminalRecord, items: list[UploadItem]) -> tuple[list[dict[str, Any]], int]:
    """Settle a batch and read the denylist version after it (one trip to a worker thread)."""
    return op.settle(term, items), op.denylist_version()


async def _terminal(request: Request, defer_nonce: bool = False) -> TerminalRecord:
    """Authenticate the signed request (see :mod:`wire.signing` and :meth:`Operator.authenticate`)."""
    op: Operator = request.app.state.operator
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await run_in_threadpool(op.authenticate, headers, request.method, request.url.path, request.url.query,
                                   body, defer_nonce)


def _admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = authorization.removeprefix("Bearer ").strip() if authorization else None
    request.app.state.operator.check_admin(token)


Terminal = Annotated[TerminalRecord, Depends(_terminal)]


def create_app(op: Operator) -> FastAPI:
    """The ASGI app over one :class:`Operator`."""
    app = FastAPI(title="ecny-pos operator", version="1",
                  description="Settlement, denylist, refunds and reports for e-CNY terminals (simulator).")
    app.state.operator = op

    @app.exception_handler(OperatorError)
    async def _operator_error(_: Request, exc: OperatorError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": {"code": "bad_request", "message": f"{where}: {first.get('msg', 'invalid')}"}},
                            status_code=400)

    @app.exception_handler(EcnyError)
    async def _ecny(_: Request, exc: EcnyError) -> JSONResponse:
        status = 400 if isinstance(exc, InvalidInput) else 500
        code = "bad_request" if status == 400 else "operator_error"
        return JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok")

    @app.post("/v1/settlements", response_model=SettlementAnswer, responses=ERRORS, openapi_extra={"requestBody": {
        "required": True, "content": {
            "application/json": {"schema": _inline_schema(SettlementRequest)},
            batch.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary",
                                            "description": "the binary batch (see wire/batch.py)"}}}}})
    async def settle(request: Request) -> Any:
        """Upload a batch of vouchers; one answer per voucher, in order. Safe to repeat.

        The body is a :class:`SettlementRequest` (``application/json``) or the same batch in binary
        (``application/vnd.ecny.settlement-batch``, :mod:`wire.batch`: what terminals send); another content type is
        a 415. The request is authenticated like every terminal call (see :mod:`wire.signing`); while that runs on a
        worker thread (a signature check and a look for the nonce among those used), the body is parsed straight from
        the raw bytes. A body error is answered only once the request is known to be authentic, so an unsigned or
        forged request gets the same refusal as anywhere else. The nonce is recorded in the batch's own transaction:
        one durable commit per batch. The answer goes out as built: the per-voucher cost of the HTTP layer stays
        small beside the signature check.
        """
        body = await request.body()  # read once, before the authentication task reads it from the cache
        auth = asyncio.ensure_future(_terminal(request, defer_nonce=True))  # recorded with the batch
        await asyncio.sleep(0)  # let it reach its worker thread
        try:
            items: list[UploadItem] | OperatorError = _body_parser(request.headers.get("content-type"))(body)
        except OperatorError as exc:
            items = exc
        term = await auth
        if isinstance(items, OperatorError):
            raise items
        results, version = await run_in_threadpool(_settle, op, term, items)
        return JSONResponse({"results": results, "denylist_version": version})

    @app.get("/v1/denylist", response_model=DenylistAnswer, responses=ERRORS)
    def get_denylist(term: Terminal, since: Annotated[int, Query(ge=0)] = 0) -> DenylistAnswer:
        """Denylist changes after version ``since``."""
        return op.denylist_since(since)

    @app.post("/v1/refunds", response_model=RefundAnswer, responses=ERRORS)
    def refund(req: RefundRequest, term: Terminal) -> RefundAnswer:
        """Refund part or all of a settled voucher to the wallet's online balance (idempotent by refund_id)."""
        return op.refund(term, req.refund_id, req.voucher_id, req.amount_fen)

    @app.get("/v1/reports/{terminal_id}/{day}", response_model=ReportAnswer, responses=ERRORS)
    def report(terminal_id: str, day: str, term: Terminal) -> ReportAnswer:
        """The settlement report of one terminal for one China Standard Time day (only the terminal's own)."""
        if terminal_id != term.terminal_id:
            raise Forbidden("a terminal may read only its own reports", "not_your_report")
        return op.report(term, day)

    @app.post("/v1/admin/terminals", dependencies=[Depends(_admin)], response_model=ProvisionAnswer, responses=ERRORS)
    def provision(req: ProvisionRequest) -> ProvisionAnswer:
        """Certify a terminal's key (back office)."""
        return op.provision_terminal(req.terminal_id, req.public_key_pem.encode())

    @app.post("/v1/admin/terminals/{terminal_id}/revoke", dependencies=[Depends(_admin)], response_model=TerminalStatus,
              responses=ERRORS)
    def revoke_terminal(terminal_id: str) -> TerminalStatus:
        return op.revoke_terminal(terminal_id)

    @app.post("/v1/admin/wallets", dependencies=[Depends(_admin)], response_model=WalletRegistered, responses=ERRORS)
    def register_wallet(req: WalletRequest) -> WalletRegistered:
        """Put a newly issued wallet on file with its opening balance."""
        return op.register_wallet(req.wallet_id, req.tier, _hex(req.certificate), req.opening_balance_fen)

    @app.get("/v1/admin/wallets/{wallet_id}", dependencies=[Depends(_admin)], response_model=WalletAnswer,
             responses=ERRORS)
    def get_wallet(wallet_id: str) -> WalletAnswer:
        return op.wallet(wallet_id)

    @app.post("/v1/admin/wallets/{wallet_id}/load-tokens", dependencies=[Depends(_admin)],
              response_model=LoadTokenAnswer, responses=ERRORS)
    def load_token(wallet_id: str, req: LoadTokenRequest) -> LoadTokenAnswer:
        """A signed load token for the wallet (the card refuses replays by load counter)."""
        token = op.issue_load_token(wallet_id, req.amount_fen, req.after_counter)
        return LoadTokenAnswer(wallet_id=wallet_id, load_counter=token.load_counter, amount_fen=token.amount_fen,
                               token=token.encode().hex())

    @app.get("/v1/admin/accounts/{merchant_id}", dependencies=[Depends(_admin)], response_model=AccountAnswer,
             responses=ERRORS)
    def account(merchant_id: str) -> AccountAnswer:
        """A merchant's account: settled, fees, refunds, balance (fen)."""
        return op.account(merchant_id)

    return app
