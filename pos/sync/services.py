"""The operator services the clerk UI calls: sync, refund, reconcile, online check.

:class:`OperatorServices` reaches the operator through :mod:`pos.sync.upload`, :mod:`pos.sync.refunds` and
:mod:`pos.sync.reports`; when it cannot, a call raises
:class:`OperatorUnavailable` and the UI says "operator not available". Tests inject their own object with the same
methods (see :class:`Services`).
"""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pos.home import Home
from pos.sync import refunds, reports, upload
from pos.sync.client import OperatorUnavailable, resolve_url
from wallet.errors import InvalidInput

__all__ = ["OperatorServices", "OperatorUnavailable", "Progress", "Services", "failure_kind"]

Progress = Callable[[int, int], None]  # (done, total)


class Services(Protocol):
    """What the UI needs from the operator side."""

    def online(self) -> bool: ...

    def sync(self, progress: Progress | None = None) -> dict[str, Any]: ...

    def refund(self, voucher_id: str, amount_fen: int | None = None) -> dict[str, Any]: ...

    def reconcile(self, day: str | None = None) -> dict[str, Any]: ...


def failure_kind(exc: BaseException) -> str:
    """What a failed sync round was, for the status bar: ``offline`` (the operator cannot be reached), ``disk``
    (the terminal's own storage failed: a full disk, an I/O error) or ``error`` (anything else)."""
    if isinstance(exc, OperatorUnavailable):
        return "offline"
    if isinstance(exc, OSError | sqlite3.DatabaseError):
        return "disk"
    return "error"


@contextmanager
def _unreachable() -> Iterator[None]:
    """Turn "cannot reach the operator" (the client's or the network's) into :class:`OperatorUnavailable`."""
    try:
        yield
    except (OSError, OperatorUnavailable) as exc:
        raise OperatorUnavailable(f"operator not reachable: {exc}") from exc


class OperatorServices:
    """The real services: :mod:`pos.sync` against the operator named in merchants.yaml (or
    ``operator_url``)."""

    def __init__(self, home: Home, terminal_id: str, operator_url: str | None = None) -> None:
        self.home = home
        self.terminal_id = terminal_id
        self.operator_url = operator_url

    @property
    def url(self) -> str:
        return resolve_url(self.home, self.operator_url)

    def online(self) -> bool:
        """Whether the operator answers (one short HTTP request; call from a worker)."""
        try:
            url = self.url
        except InvalidInput:
            return False  # no usable operator URL: nothing to ask
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=0.5):  # noqa: S310 - http(s) from validated config
                return True
        except OSError as exc:
            return getattr(exc, "code", None) is not None  # an HTTP error status still means it answered

    def sync(self, progress: Progress | None = None) -> dict[str, Any]:
        def report(p: upload.SyncProgress) -> None:
            if progress is not None:
                progress(p.done, p.total)

        # The client turns network failures into OperatorUnavailable; an OSError here is the terminal's own
        # storage (a full disk under the ledger) and is raised as it is, not as "operator not reachable".
        result = upload.sync_once(self.home, self.terminal_id, operator_url=self.operator_url, progress=report)
        return result.to_json()

    def refund(self, voucher_id: str, amount_fen: int | None = None) -> dict[str, Any]:
        with _unreachable():
            return dict(refunds.request_refund(self.home, self.terminal_id, voucher_id, amount_fen=amount_fen,
                                              operator_url=self.operator_url))

    def reconcile(self, day: str | None = None) -> dict[str, Any]:
        with _unreachable():
            return dict(reports.reconcile(self.home, self.terminal_id, day=day, operator_url=self.operator_url))
