"""What the terminal could not settle, reported to the operator, and what the operator's books say of it.

The terminal reports (``POST /v1/reconciliation``, signed) every ``unresolved`` entry of its ledger (a torn or
orphaned charge the card's log no longer reaches, or that no card answered within seven days) and every open intent
whose wallet and counter it knows (the card left after PAY was sent, or the terminal's process died after leaving
its pay-sent mark) that the card has not brought back yet. The operator matches them with the gaps in the wallets'
settled counters (:mod:`bank.reconcile`) and answers per item what it found and what happens next.

Sync reports only when the set changed since the last report it made (a digest kept in
``HOME/terminals/TID/unresolved.sha256``), so a terminal with nothing unresolved sends nothing; ``pos report`` asks
every time there is something to show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, TypeVar

from pydantic import ValidationError

from pos.home import Home
from pos.ledger import Ledger
from pos.payment.pay_marks import read_marks
from pos.sync.client import OperatorClient, OperatorUnavailable
from wallet.files import write_atomic
from wire.models import Reconciliation, TerminalReconciliation, WireModel

M = TypeVar("M", bound=WireModel)

DIGEST_FILE = "unresolved.sha256"
_NOTHING = hashlib.sha256(b"[]").hexdigest()


def unresolved_items(ledger: Ledger) -> list[dict[str, Any]]:
    """The items to report (:class:`wire.models.UnresolvedItem` as JSON), by intent: ``unresolved`` entries, then
    open intents whose wallet and counter are known (from a ``torn`` entry or a pay-sent mark)."""
    items: list[dict[str, Any]] = []
    for e in ledger.unresolved():
        intent = ledger.entry(int(e.data.get("intent") or 0))
        if intent is None or intent.kind != "intent" or "challenge" not in intent.data:
            continue  # a closing entry always names its intent: a ledger that verifies has it
        items.append({"intent": intent.seq, "state": "unresolved", "wallet_id": e.wallet_id,
                      "counter": e.counter if e.wallet_id else None, "amount_fen": intent.amount_fen,
                      "challenge": intent.data["challenge"], "problem": str(e.data.get("problem") or "")[:200],
                      "time": intent.time})
    marks = None
    for oi in ledger.open_intents():
        wallet, counter, why = oi.wallet_id, oi.counter, "the card left after PAY was sent"
        if wallet is None or counter is None:
            marks = read_marks(ledger.path) if marks is None else marks
            mark = marks.get(oi.seq)
            if mark is None or not mark.wallet_id or mark.challenge != oi.challenge:
                continue  # no PAY is known to have reached a card: nothing for the operator to match
            wallet, counter, why = mark.wallet_id, mark.counter, "PAY was sent, then the charge stopped"
        items.append({"intent": oi.seq, "state": "open", "wallet_id": wallet, "counter": counter,
                      "amount_fen": oi.amount_fen, "challenge": oi.challenge.hex(),
                      "problem": f"{why}; the card has not been back", "time": oi.created})
    return sorted(items, key=lambda i: i["intent"])


def report_unresolved(home: Home, terminal_id: str, ledger: Ledger, cli: OperatorClient,
                      always: bool = False) -> dict[str, Any] | None:
    """Report the terminal's unresolved items; the operator's answer as JSON (``{"terminal_id", "items",
    "gaps"}``), or None when nothing was sent: nothing to report now or ever reported, or (unless ``always``) the
    same set as last time."""
    items = unresolved_items(ledger)
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path = home.terminal_dir(terminal_id) / DIGEST_FILE
    try:
        last: str | None = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        last = None
    if not items and last in (None, _NOTHING):
        return None
    if digest == last and not always:
        return None
    answer = _parse(TerminalReconciliation, cli.call("POST", "/v1/reconciliation", {"items": items}))
    with contextlib.suppress(OSError):  # only saves sending the same report again
        write_atomic(path, digest.encode())
    return answer.to_json()


def operator_reconciliation(cli: OperatorClient, wallet_id: str | None = None,
                            limit: int | None = None) -> dict[str, Any]:
    """The back office's reconciliation (``GET /v1/admin/reconciliation``, a client with the admin token): gaps,
    balance breaks and every terminal's reported items, as JSON."""
    params = {k: v for k, v in (("wallet_id", wallet_id), ("limit", limit)) if v is not None}
    answer = cli.call("GET", "/v1/admin/reconciliation", params=params or None, signed=False)
    return _parse(Reconciliation, answer).to_json()


def _parse(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise OperatorUnavailable(f"the operator's answer does not fit the contract: {problem}") from None
