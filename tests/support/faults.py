"""Scripted network faults between a terminal and its operator, for tests (an httpx transport)."""

from __future__ import annotations

import threading

import httpx


class FaultTransport(httpx.BaseTransport):
    """A transport that injects network faults, one scripted fault per matching request.

    Faults: ``None`` (pass through), ``"timeout_before"`` (never sent, ReadTimeout), ``"timeout_after"`` (sent and
    processed, the answer lost: ReadTimeout), ``"500"`` (never sent, HTTP 500), ``"500_after"`` (processed, then
    HTTP 500), ``"truncate"`` (processed, the answer cut in half), ``"reset"`` (processed, connection dropped
    mid-answer). ``match`` limits faults to paths containing it; ``sent`` counts requests that reached the server.
    """

    def __init__(self, faults: list[str | None], match: str = "", inner: httpx.BaseTransport | None = None) -> None:
        self.faults = list(faults)
        self.match = match
        self.inner = inner or httpx.HTTPTransport()
        self.sent = 0
        self._lock = threading.Lock()  # the sync sends two batches at once

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            fault = self.faults.pop(0) if self.faults and self.match in request.url.path else None
        if fault == "timeout_before":
            raise httpx.ReadTimeout("injected timeout", request=request)
        if fault == "500":
            return httpx.Response(500, json={"error": {"code": "injected", "message": "injected 500"}})
        response = self.inner.handle_request(request)
        response.read()
        with self._lock:
            self.sent += 1
        if fault is None:
            return response
        if fault == "timeout_after":
            raise httpx.ReadTimeout("injected timeout after the server answered", request=request)
        if fault == "500_after":
            return httpx.Response(500, text="Internal Server Error")
        if fault == "truncate":
            body = response.content
            return httpx.Response(response.status_code, content=body[: len(body) // 2],
                                  headers={"content-type": "application/json"})
        if fault == "reset":
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=request)
        raise ValueError(f"unknown fault {fault!r}")

    def close(self) -> None:
        self.inner.close()
