"""The operator services the clerk UI calls: sync, refund, reconcile, online check.

:class:`OperatorServices` reaches the operator through ``pos.sync.upload``, ``refunds`` and ``reports`` when they
exist; until then every call raises :class:`OperatorUnavailable` and the UI says "operator not available".
Tests inject their own object with the
same methods (see :class:`Services`).
"""

from __future__ import annotations

import importlib
import os
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pos.home import Home
from wallet.errors import EcnyError

Progress = Callable[[int, int], None]  # (done, total)


class OperatorUnavailable(EcnyError):
    """The operator client (pos.sync) is not installed or the operator cannot be reached."""


class Services(Protocol):
    """What the UI needs from the operator side."""

    def online(self) -> bool: ...

    def sync(self, progress: Progress | None = None) -> dict[str, Any]: ...

    def refund(self, voucher_id: str, amount_fen: int | None = None) -> dict[str, Any]: ...

    def reconcile(self, day: str | None = None) -> dict[str, Any]: ...


def _sync_module(name: str = "upload") -> Any:
    try:
        return importlib.import_module(f"pos.sync.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"pos.sync.{name}", "bank"):
            raise OperatorUnavailable(f"operator not available (pos.sync.{name} is not installed)") from None
        raise


@contextmanager
def _unreachable() -> Iterator[None]:
    """Turn "cannot reach the operator" (pos.sync.client's or the network's) into :class:`OperatorUnavailable`."""
    try:
        yield
    except OSError as exc:
        raise OperatorUnavailable(f"operator not reachable: {exc}") from exc
    except EcnyError as exc:
        if type(exc).__name__ == "OperatorUnavailable":
            raise OperatorUnavailable(f"operator not reachable: {exc}") from exc
        raise


class OperatorServices:
    """The real services: ``pos.sync`` against the operator named in merchants.yaml (or ``operator_url``)."""

    def __init__(self, home: Home, terminal_id: str, operator_url: str | None = None) -> None:
        self.home = home
        self.terminal_id = terminal_id
        self.operator_url = operator_url

    @property
    def url(self) -> str:
        return (self.operator_url or os.environ.get("POS_OPERATOR_URL") or self.home.config.operator.url).rstrip("/")

    def online(self) -> bool:
        """Whether the operator answers (one short HTTP request; call from a worker)."""
        try:
            _sync_module()
        except OperatorUnavailable:
            return False
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=0.5):  # noqa: S310 - http(s) from validated config
                return True
        except OSError as exc:
            return getattr(exc, "code", None) is not None  # an HTTP error status still means it answered

    def sync(self, progress: Progress | None = None) -> dict[str, Any]:
        mod = _sync_module()
        def report(p: Any) -> None:
            if progress is not None:
                progress(int(getattr(p, "done", 0)), int(getattr(p, "total", 0)))

        with _unreachable():
            result = mod.sync_once(self.home, self.terminal_id, operator_url=self.operator_url, progress=report)
        return result.to_json() if hasattr(result, "to_json") else dict(result)

    def refund(self, voucher_id: str, amount_fen: int | None = None) -> dict[str, Any]:
        mod = _sync_module("refunds")
        with _unreachable():
            return dict(mod.request_refund(self.home, self.terminal_id, voucher_id, amount_fen=amount_fen,
                                           operator_url=self.operator_url))

    def reconcile(self, day: str | None = None) -> dict[str, Any]:
        mod = _sync_module("reports")
        with _unreachable():
            return dict(mod.reconcile(self.home, self.terminal_id, day=day, operator_url=self.operator_url))
