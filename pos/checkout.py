"""Taking a payment at a configured terminal through any reader: the one entry point the CLI and UIs share."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ecny_nfc.reader import Reader
from pos.home import Home
from pos.session import Outcome, PaymentSession


def take_payment(home: Home, terminal_id: str, reader: Reader, amount_fen: int, *, timeout: float | None = 30.0,
                 cancel: threading.Event | None = None, recovery_timeout: float | None = None,
                 after_pay: Callable[[], None] | None = None) -> Outcome:
    """Wait up to ``timeout`` for a card on ``reader`` and charge it ``amount_fen`` at ``terminal_id``.

    ``after_pay`` is a tester's fault hook that runs right after the card answers PAY (e.g. a power loss).
    """
    home.terminal(terminal_id)
    with home.ledger(terminal_id) as ledger:
        ctx = home.context(terminal_id, ledger)
        ctx.after_pay = after_pay
        if recovery_timeout is not None:
            ctx.recovery_timeout = recovery_timeout
        return PaymentSession(ctx, reader).pay(amount_fen, timeout=timeout, cancel=cancel)
