"""Tester operations on mock cards: issue (every tier, expired or foreign certificates), load, clone, describe.

Issuing registers each wallet with the operator (its opening balance is what the operator counts as loaded); a card
whose wallet id the operator has on file already is issued again under a fresh id (:func:`register_cards`). A
load asks the operator for a signed load token. When the operator cannot be reached, both fall back to the home's
operator in-process (``local``, by default the embedded one: the CA under HOME/pki and its SQLite database, as the
composition root builds it), so the tester's tools work offline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

from ecny_nfc.mock import Faults, MockReader
from pos.home import Home
from pos.money import format_fen
from pos.payment.card_client import CardStatusError, WalletClient
from pos.payment.checkout import take_payment
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason, reason_for_status
from pos.sync.client import (
    LocalOperator,
    OperatorClient,
    OperatorRefused,
    OperatorUnavailable,
    RetryPolicy,
    embedded_back_office,
)
from wallet.card import CardState
from wallet.clock import now_ms
from wallet.errors import EcnyError, InvalidInput, WalletIdTaken
from wallet.issuance import issue_card, register_issued
from wallet.limits import tier_limits
from wallet.protocol import STATUS_ACTIVE, LoadToken
from wire.errors import NotFound


class LoadRefused(CardStatusError):
    """The card refused a load token."""

    @property
    def reason(self) -> Reason:
        return reason_for_status(self.status)


def issue_cards(home: Home, tier: int, balance_fen: int, count: int = 1, *, expired: bool = False,
                foreign: bool = False, note: str = "", register: bool = True,
                operator_url: str | None = None, local: LocalOperator = embedded_back_office) -> list[CardState]:
    """Issue ``count`` cards into the home's card store, certified by the operator CA (or a foreign one).

    With ``register`` (default) the operator's wallets get each card's opening balance (foreign and expired cards
    are not the operator's to register).
    """
    check_issue(tier, balance_fen)
    caps = home.config.risk.caps
    pki = home.foreign_pki() if foreign else home.pki
    store = home.cards
    out: list[CardState] = []
    with store.allocating():
        try:
            for _ in range(count):
                state = issue_card(pki, store.new_id(), tier, balance_fen, caps, expired=expired)
                state.note = note
                store.add(state)
                out.append(state)
        except BaseException:
            for s in out:  # all or nothing: no card of a batch that failed half-way (e.g. on a full disk)
                store.remove(s.card_id)
            raise
    if register and not foreign and not expired:
        out = register_cards(home, out, lambda batch: register_wallets(home, batch, operator_url, local))
    return out


def register_cards(home: Home, states: list[CardState], register: Callable[[list[CardState]], object],
                   now: dt.datetime | None = None) -> list[CardState]:
    """Register the wallets of cards just written to the home's store (``register(batch)``, as
    :func:`register_wallets`), through :func:`~wallet.issuance.register_issued`: a card whose wallet id the operator
    has on file with another certificate is issued again under the same card id (certified at ``now``, as it was)
    and its file rewritten before it is registered, so the file holds the card the operator knows. Returns the
    states as registered; when registration fails, the cards' files are removed (a card the operator does not know
    would be refused at settlement: none at all)."""
    caps = home.config.risk.caps

    def reissue(old: CardState) -> CardState:
        state = issue_card(home.pki, old.card_id, old.tier, old.balance_fen, caps, now=now)
        state.note = old.note
        home.cards.save(state)
        return state

    try:
        return register_issued(states, register, reissue)
    except BaseException:
        for s in states:
            home.cards.remove(s.card_id)
        raise


def check_issue(tier: int, balance_fen: int) -> None:
    """Refuse a tier or balance the card could not hold, before anything is allocated or written."""
    try:
        limits = tier_limits(tier)
    except (KeyError, ValueError):
        raise InvalidInput(f"tier must be 1, 2, 3 or 4, got {tier}") from None
    if balance_fen < 0:
        raise InvalidInput("balance must not be negative")
    if limits.balance_max is not None and balance_fen > limits.balance_max:
        raise InvalidInput(f"balance {format_fen(balance_fen)} is over the tier {tier} wallet cap of "
                           f"{format_fen(limits.balance_max)}")


def register_wallets(home: Home, states: list[CardState], operator_url: str | None = None,
                     local: LocalOperator = embedded_back_office) -> str:
    """Put wallets on file at the operator; returns "operator", or "local" when ``local`` did it. Raises
    :class:`~wallet.errors.WalletIdTaken` naming the wallet ids that operator has on file with other certificates
    (the others are on file): it is the authority on them, so such a refusal never falls back to ``local``."""
    taken: list[str] = []

    def one(register: Callable[..., object], s: CardState) -> None:
        try:
            register(s.wallet_id, s.tier, s.cert_der, s.balance_fen)
        except WalletIdTaken:
            taken.append(s.wallet_id)

    where = "operator"
    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=1), timeout=5.0) as cli:
            for s in states:
                one(cli.register_wallet, s)
    except (OperatorUnavailable, OperatorRefused):
        # not reachable, or another operator (another home) answers on that port: use the embedded one
        where = "local"
        taken.clear()
        with local(home) as op:
            for s in states:
                one(op.register_wallet, s)
    if taken:
        raise WalletIdTaken.of(taken)
    return where


def operator_load_token(home: Home, state: CardState, amount_fen: int, operator_url: str | None = None,
                        local: LocalOperator = embedded_back_office) -> LoadToken:
    """A load token from the operator (HTTP), else from ``local`` (the embedded operator), else from the local CA
    alone."""
    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=2), timeout=5.0) as cli:
            answer = cli.load_token(state.wallet_id, amount_fen, state.load_counter)
        return LoadToken.decode(bytes.fromhex(answer.token))
    except OperatorUnavailable:
        pass
    except OperatorRefused as exc:
        if exc.code not in ("unknown_wallet", "bad_admin_token"):
            raise  # e.g. wallet_revoked: the operator will not load it
    with local(home) as op:
        try:
            return op.issue_load_token(state.wallet_id, amount_fen, state.load_counter)
        except NotFound:
            return make_load_token(home, state, amount_fen)


def make_load_token(home: Home, state: CardState, amount_fen: int) -> LoadToken:
    """A load token for the card's next load counter, signed by the embedded operator's wallet CA."""
    return LoadToken(state.wallet_id, state.load_counter + 1, amount_fen, now_ms()).signed(
        home.pki.wallet_ca.key)


def apply_load(home: Home, card_id: str, token_factory: Any = None, amount_fen: int = 0) -> tuple[int, LoadToken]:
    """Tap the card on a mock reader and LOAD it; returns the new balance and the token used."""
    with home.cards.open(card_id) as applet:
        token = (token_factory or (lambda s: operator_load_token(home, s, amount_fen)))(applet.state)
        reader = MockReader()
        reader.present(applet)
        conn = reader.connect(timeout=1)
        client = WalletClient(conn)
        client.select()
        try:
            balance = client.load(token)
        except CardStatusError as exc:
            if token_factory is None:
                report_load(home, token, taken=False)
            raise LoadRefused(exc.command, exc.status) from None
    if token_factory is None:
        report_load(home, token, taken=True)
    return balance, token


def report_load(home: Home, token: LoadToken, taken: bool, operator_url: str | None = None,
                local: LocalOperator = embedded_back_office) -> None:
    """Tell the operator whether the card took ``token`` (it counts a load only once confirmed; a refused one is
    cancelled), over HTTP, else to ``local``; best effort: nothing when neither issued the token (a local CA's own)
    or the operator is out of reach (a later voucher of the card proves a load it took)."""
    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=2), timeout=5.0) as cli:
            (cli.confirm_load if taken else cli.cancel_load)(token.wallet_id, token.load_counter)
        return
    except OperatorUnavailable:
        pass
    except OperatorRefused as exc:
        if exc.code not in ("unknown_wallet", "unknown_load", "bad_admin_token"):
            return
    with contextlib.suppress(EcnyError), local(home) as op:
        (op.confirm_load if taken else op.cancel_load)(token.wallet_id, token.load_counter)


def describe_card(state: CardState) -> dict[str, Any]:
    """The JSON shape of ``pos card show``."""
    return {
        "card_id": state.card_id, "wallet_id": state.wallet_id, "tier": state.tier,
        "balance_fen": state.balance_fen, "counter": state.counter, "load_counter": state.load_counter,
        "status": "active" if state.status == STATUS_ACTIVE else "blocked",
        "limits": {"single_max_fen": state.single_max, "daily_max_fen": state.daily_max,
                   "balance_max_fen": state.balance_max, "offline_single_max_fen": state.offline_single_max,
                   "offline_cumulative_max_fen": state.offline_cumulative_max,
                   "offline_count_max": state.offline_count_max},
        "offline_usage": {"amount_fen": state.offline_amount, "count": state.offline_count},
        "day": state.day, "day_spent_fen": state.day_spent,
        "clone_of": state.clone_of, "note": state.note,
    }


def tap_mock_card(home: Home, terminal_id: str, card_id: str, amount_fen: int, faults: Faults | None = None,
                  retap: bool = False, timeout: float = 5.0, power_loss: bool = False) -> Outcome:
    """Pay ``amount_fen`` at ``terminal_id`` with a stored mock card (the headless ``pos pay``).

    The card is locked for the whole tap, so concurrent commands on one card run one after the other. With
    ``retap`` the card comes back into the field after a tear, as a customer asked to tap again would. With
    ``power_loss`` the terminal process dies (exit status 137) right after the card answers PAY, before it records
    the voucher: the next tap at that terminal recovers it from the intent written when the charge started.
    """
    home.terminal(terminal_id)
    home.roots()  # a damaged certificate store fails here, before the terminal's ledger is opened
    with home.cards.open(card_id) as applet:
        reader = MockReader()
        reader.present(applet, faults)
        if retap:
            reader.present(applet)
        return take_payment(home, terminal_id, reader, amount_fen, timeout=timeout,
                            recovery_timeout=None if retap else 0, after_pay=_power_loss if power_loss else None)


def _power_loss() -> None:
    os._exit(137)  # no cleanup, no flush: as if the terminal lost power
