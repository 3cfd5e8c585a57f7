"""The operator's OpenAPI document against the operator itself (schemathesis, in-process ASGI, no network): for every
operation, generated requests (valid and not) get no 5xx and no answer the document does not describe (status code,
content type, body schema).

Requests go out signed: a hook adds the admin token to back-office calls, and the app is wrapped in a small ASGI
shim that signs every terminal call as the provisioned terminal over the exact method, path, query and body it
receives (what a real terminal signs; schemathesis's own serialization cannot be second-guessed from a hook).
Bounded and derandomized: at most 20 examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bank.app import create_app
from bank.service import Operator
from bank.settings import OperatorSettings
from wallet.keys import new_key
from wire import signing

TERMINAL, MERCHANT = "CMGQ0001", "320508000000101"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class SigningShim:
    """Signs each terminal request (not ``/v1/admin``, not the OpenAPI document) as ``TERMINAL`` on its way in."""

    def __init__(self, app: Any, key: Any) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path.startswith("/v1/admin"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        headers = signing.sign_request(self.key, TERMINAL, scope["method"], path, query, body)
        scope = dict(scope, headers=[*scope["headers"], *((k.lower().encode(), v.encode())
                                                          for k, v in headers.items())])
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def operator_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    op = Operator.from_settings(OperatorSettings(f"sqlite:///{root / 'operator.db'}", root / "pki",
                                                 terminal_merchants={TERMINAL: MERCHANT}))
    key = new_key()
    op.provision_terminal(TERMINAL, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    try:
        yield SigningShim(create_app(op), key), op.auth.admin_token or ""
    finally:
        op.close()


@pytest.fixture(scope="module")
def api(operator_app: tuple[Any, str]) -> Any:
    app, token = operator_app
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)

    @loaded.hook
    def map_case(ctx: Any, case: Any) -> Any:
        if case.path.startswith("/v1/admin"):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        return case

    return loaded


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_document_says(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
