"""The operator's HTTP edge: request bodies capped before they are read, and every error a typed JSON body.

:class:`BodyGuard` is an ASGI middleware around the app: every answer carries ``X-Ecny-Operator-Time`` (the operator's
clock, see :mod:`wire.signing`); a request whose ``Content-Length`` is over the cap for its
path is answered 413 at once, and a streamed body is counted as it is read (the read stops with a 413 at the cap).
Anything that escapes the app (a bug, a database gone) is answered as typed JSON too, never as text with a traceback:
a lost database is a 503 with ``Retry-After``, anything else a 500 ``internal_error``. :func:`install_handlers` maps
the framework's own errors (validation, unknown routes, wrong methods) onto the same body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bank.clock import now_ms
from bank.settings import BodyLimits
from bank.store import is_transient, unavailable
from wallet.errors import EcnyError, InvalidInput
from wire.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    OperatorError,
    PayloadTooLarge,
    ServiceUnavailable,
)
from wire.signing import H_OPERATOR_TIME

log = logging.getLogger("bank.app")
OPERATOR_TIME = H_OPERATOR_TIME.lower().encode()
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_response(exc: OperatorError) -> JSONResponse:
    """The typed JSON answer of ``exc`` (with ``Retry-After`` on a 503)."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServiceUnavailable) else None
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


def as_operator_error(exc: BaseException) -> OperatorError:
    """Any exception as the typed error the caller gets (unexpected ones logged with their traceback)."""
    if isinstance(exc, OperatorError):
        return exc
    if isinstance(exc, InvalidInput):
        return BadRequest(str(exc))
    if is_transient(exc):
        return unavailable(exc)
    log.error("unexpected error", exc_info=exc)
    return InternalError("the operator failed unexpectedly; what the request changed was rolled back")


class BodyGuard:
    """Caps request bodies (see the module) and answers whatever escapes the app as typed JSON."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope.get("path", ""))
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # every answer tells the terminal the operator's time (it learns its clock offset from it)
                message["headers"] = [*message.get("headers", ()), (OPERATOR_TIME, str(now_ms()).encode())]
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_error(send_tracked, PayloadTooLarge(f"request body of {declared} bytes is over the cap of "
                                                            f"{limit}"))
            return
        seen = 0

        async def receive_capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is over the cap of {limit} bytes")
            return message

        try:
            await self.app(scope, receive_capped, send_tracked)
        except Exception as exc:
            if started:
                raise
            await _send_error(send_tracked, as_operator_error(exc))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, exc: OperatorError) -> None:
    body = json.dumps(exc.to_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, ServiceUnavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, PayloadTooLarge):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_handlers(app: FastAPI) -> None:
    """Typed JSON answers for every error the app raises or the framework makes."""

    @app.exception_handler(OperatorError)
    async def _operator_error(_: Request, exc: OperatorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(BadRequest(f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound("no such route", "no_route"))
        if exc.status_code == 405:
            response = error_response(MethodNotAllowed("this route does not take this method"))
            if exc.headers and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        err = OperatorError(str(exc.detail), "http_error")
        err.status = exc.status_code
        return error_response(err)

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        return error_response(as_operator_error(exc))

    @app.exception_handler(EcnyError)
    async def _ecny(_: Request, exc: EcnyError) -> JSONResponse:
        return error_response(as_operator_error(exc))
