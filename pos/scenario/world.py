"""What a running scenario holds: its home, virtual clock, operator, named cards and gates; and each action.

Every action goes through the APIs the ``pos`` commands use (:func:`~pos.cards.manage.tap_mock_card`, the
:class:`~pos.gate.ticket_gate.Gate`, :mod:`pos.sync`, the composition root for the embedded operator) and answers a
flat dict of what happened, the keys an ``expect`` compares.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import httpx

from ecny_nfc.mock import Faults, MockReader
from pos.cards.manage import (
    LoadRefused,
    apply_load,
    check_issue,
    register_cards,
    register_wallets,
    tap_mock_card,
)
from pos.cards.tap_socket import TerminalNotRunning, ping, send_tap
from pos.composition import start_embedded_operator
from pos.gate.ticket_gate import Gate
from pos.home import Home
from pos.payment.checkout import take_payment
from pos.payment.outcome import Outcome
from pos.scenario.schema import (
    UI_WAIT_S,
    CardSpec,
    GateStep,
    KillStep,
    LoadStep,
    OperatorChange,
    PayStep,
    RefundStep,
    SyncStep,
)
from pos.sync.client import OperatorRefused, OperatorUnavailable, RetryPolicy, provision_terminal, terminal_key_path
from pos.sync.refunds import RefundRefused, request_refund
from pos.sync.upload import BATCH_SIZE, sync_once
from wallet.card import CardState
from wallet.clock import VirtualClock, from_ms
from wallet.errors import EcnyError, InvalidInput
from wallet.issuance import issue_card
from wallet.protocol import INS_PAY, INS_READ_INFO, INS_SELECT

ENV_URL = "POS_OPERATOR_URL"
NOWHERE = "http://127.0.0.1:9"  # operator: none (the discard port: refused at once)
TEAR_AT = {"select": INS_SELECT, "read-info": INS_READ_INFO, "pay": INS_PAY}
NO_WAIT = RetryPolicy(attempts=2, base=0.0, cap=0.0, sleep=lambda _s: None)  # retries do not wait in a scenario
CERT_YEARS = dt.timedelta(days=5 * 365)  # a wallet certificate's life (wallet.pki)


class ScenarioStepError(EcnyError):
    """A step cannot run (an unknown card name, no voucher to refund, no operator)."""


class _Killed(BaseException):
    pass


def _kill() -> None:
    raise _Killed


class Outage(httpx.BaseTransport):
    """The line to the operator: passes requests through while up; while down, refuses them (after letting
    ``allow`` more through, for an outage in the middle of a sync)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.down = False
        self.allow = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            if self.allow <= 0:
                raise httpx.ConnectError("the operator is down (scenario)", request=request)
            self.allow -= 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class World:
    """One scenario's shop: call :meth:`start` first and :meth:`close` at the end."""

    def __init__(self, home: Home, clock: VirtualClock, operator: str = "embedded") -> None:
        self.home = home
        self.clock = clock
        self.mode = operator
        self.url: str | None = None if operator in ("embedded", "none") else operator
        self.embedded: Any = None
        self.line = Outage()
        self.cards: dict[str, str] = {}  # scenario name: card id
        self.gates: dict[str, Gate] = {}
        self.last_voucher: dict[str, str] = {}
        self.saved: dict[str, str] = {}
        self.armed_kills: set[str] = set()
        self.provisioned: set[str] = set()
        self.synced: list[str] = []
        self._old_env: str | None = None

    def start(self) -> None:
        if self.mode == "embedded":
            self.embedded = start_embedded_operator(self.home)
            self.url = self.embedded.url
        self._old_env = os.environ.get(ENV_URL)
        os.environ[ENV_URL] = self.url or NOWHERE  # the tester tools (loads, registrations) find it there

    def close(self) -> None:
        for gate in self.gates.values():
            gate.close()
        self.gates.clear()
        self.line.close()
        if self._old_env is None:
            os.environ.pop(ENV_URL, None)
        else:
            os.environ[ENV_URL] = self._old_env
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    # -- names ------------------------------------------------------------------------------------------------------
    def card(self, name: str) -> str:
        try:
            return self.cards[name]
        except KeyError:
            raise ScenarioStepError(f"no card named {name!r} (declare it under cards: or issue it)") from None

    def state(self, name: str) -> CardState:
        return self.home.cards.load(self.card(name))

    def voucher(self, terminal_id: str, ref: str) -> str:
        if ref == "last":
            if terminal_id not in self.last_voucher:
                raise ScenarioStepError(f"no approved payment at {terminal_id} yet")
            return self.last_voucher[terminal_id]
        return self.saved.get(ref, ref)

    def provision(self, terminal_id: str) -> None:
        self.home.terminal(terminal_id)
        if terminal_id not in self.provisioned and self.mode != "none":
            if not terminal_key_path(self.home, terminal_id).exists():  # a running terminal's key stays as it is
                provision_terminal(self.home, terminal_id, self.url)
            self.provisioned.add(terminal_id)

    # -- actions ----------------------------------------------------------------------------------------------------
    def issue(self, specs: dict[str, CardSpec]) -> dict[str, Any]:
        names: list[str] = []
        for name, spec in specs.items():
            batch = [name.replace("${i}", str(i)) for i in range(1, spec.count + 1)] if spec.count > 1 else [name]
            clash = [n for n in batch if n in self.cards]
            if clash:
                raise ScenarioStepError(f"card {clash[0]!r} exists already")
            for n, state in zip(batch, self._issue(spec, len(batch)), strict=True):
                self.cards[n] = state.card_id
            names += batch
        return {"issued": len(names), "cards": names}

    def _issue(self, spec: CardSpec, count: int) -> list[CardState]:
        if spec.clone_of is not None:
            return [self.home.cards.clone(self.card(spec.clone_of), with_key=not spec.without_key)
                    for _ in range(count)]
        check_issue(spec.tier, spec.balance)
        # expires_at: certified now, for a certificate life that ends exactly then
        issued_at = None if spec.expires_at is None else from_ms(spec.expires_at) - CERT_YEARS + dt.timedelta(
            minutes=5)
        store = self.home.cards
        pki = self.home.foreign_pki() if spec.foreign else self.home.pki
        out = []
        with store.allocating():  # ids allocated once for the batch (the store's lock is ours while we write)
            first = int(store.new_id()[1:])
            for k in range(count):
                state = issue_card(pki, f"c{first + k:04d}", spec.tier, spec.balance, self.home.config.risk.caps,
                                   expired=spec.expired, now=issued_at)
                state.note = "scenario card"
                store.add(state)
                out.append(state)
        live = spec.expires_at is None or spec.expires_at > self.clock.now_ms()
        if not (spec.foreign or spec.expired) and live:
            out = register_cards(self.home, out, self._register, now=issued_at)  # fresh ids for ids on file
        return out

    def _register(self, states: list[CardState]) -> None:
        """Put new wallets on file at the operator (the embedded one directly, the batch in one transaction)."""
        if self.embedded is None:
            register_wallets(self.home, states, self.url or NOWHERE)
            return
        self.embedded.operator.register_wallets([(s.wallet_id, s.tier, s.cert_der, s.balance_fen) for s in states])

    def pay(self, a: PayStep) -> dict[str, Any]:
        card_id = self.card(a.card)
        if a.via == "ui":
            return self._pay_via_ui(a, card_id)
        self.provision(a.terminal)
        tear = ({} if a.tear_after is None else {"tear_at": TEAR_AT[a.tear_after]} if isinstance(a.tear_after, str)
                else {"tear_after": a.tear_after})
        faults = Faults(**tear, corrupt_response=a.corrupt, delay=a.slow)
        if a.power_loss or a.terminal in self.armed_kills:
            self.armed_kills.discard(a.terminal)
            outcome = self._tap_and_die(a.terminal, card_id, a.amount, faults, a.retap, a.timeout)
            if outcome is None:
                return {"status": "killed", "amount": a.amount, "reason": None, "recovered": 0}
        else:
            outcome = tap_mock_card(self.home, a.terminal, card_id, a.amount, faults, retap=a.retap,
                                    timeout=a.timeout)
        if outcome.approved and outcome.voucher_id:
            self.last_voucher[a.terminal] = outcome.voucher_id
            if a.save_as:
                self.saved[a.save_as] = outcome.voucher_id
        return _outcome(outcome)

    def _tap_and_die(self, terminal_id: str, card_id: str, amount: int, faults: Faults, retap: bool,
                     timeout: float) -> Outcome | None:
        """A tap at a terminal whose process dies right after the card answers PAY (as ``pos pay --power-loss``,
        but in-process: the charge unwinds without recording the voucher; its intent stays open)."""
        with self.home.cards.open(card_id) as applet:
            reader = MockReader()
            reader.present(applet, faults)
            if retap:
                reader.present(applet)
            try:
                return take_payment(self.home, terminal_id, reader, amount, timeout=timeout,
                                    recovery_timeout=None if retap else 0, after_pay=_kill)
            except _Killed:
                return None

    def gate(self, a: GateStep) -> dict[str, Any]:
        if a.via == "ui":
            j = self._ui_tap(a.terminal, self.card(a.card), a.timeout if "timeout" in a.model_fields_set else UI_WAIT_S)
            if "gate" not in j:
                raise ScenarioStepError(f"terminal {a.terminal} is not a gate")
            self._remember(a.terminal, j)
            return _gate_result(j)
        self.provision(a.terminal)
        gate = self.gates.get(a.terminal)
        if gate is None:
            gate = self.gates[a.terminal] = Gate(self.home, a.terminal)
        with self.home.cards.open(self.card(a.card)) as applet:
            reader = MockReader()
            reader.present(applet)
            decision = gate.admit(reader, a.product, a.quantity, timeout=a.timeout)
        if decision is None:
            return {"status": "declined", "reason": "no_card", "open": False}
        j = decision.to_json()
        if decision.outcome is not None and decision.outcome.approved and decision.outcome.voucher_id:
            self.last_voucher[a.terminal] = decision.outcome.voucher_id
        return _gate_result(j)

    # -- via: ui ----------------------------------------------------------------------------------------------------
    def _ui_tap(self, terminal_id: str, card_id: str, wait: float) -> dict[str, Any]:
        """Tap ``card_id`` on the running terminal by its socket, once it waits for a tap (a counter: once the clerk
        has opened the charge), waiting up to ``wait`` seconds; the terminal's decision (``pos pay --json``)."""
        self.home.terminal(terminal_id)
        deadline = time.monotonic() + wait
        try:
            while not ping(self.home, terminal_id).get("waiting"):
                if time.monotonic() >= deadline:
                    raise ScenarioStepError(f"terminal {terminal_id} did not wait for a tap within {wait:g} s "
                                            f"(a counter: open the charge)")
                time.sleep(0.05)
        except TerminalNotRunning:
            raise ScenarioStepError(f"no terminal {terminal_id} is running in {self.home.root} (via: ui): start "
                                    f"it with pos --home {self.home.root} run (or gate) --terminal {terminal_id}"
                                    ) from None
        return send_tap(self.home, terminal_id, card_id, timeout=max(1.0, deadline - time.monotonic()))

    def _pay_via_ui(self, a: PayStep, card_id: str) -> dict[str, Any]:
        if a.terminal in self.armed_kills:
            raise ScenarioStepError("kill cannot reach a running terminal: leave out via: ui")
        j = self._ui_tap(a.terminal, card_id, a.timeout if "timeout" in a.model_fields_set else UI_WAIT_S)
        if "gate" in j:
            raise ScenarioStepError(f"terminal {a.terminal} is a gate: use a gate step")
        if j.get("amount_fen") != a.amount:
            raise ScenarioStepError(f"the charge open at {a.terminal} is of {j.get('amount_fen')} fen, "
                                    f"the step pays {a.amount} fen")
        self._remember(a.terminal, j)
        if j.get("status") == "approved" and a.save_as:
            self.saved[a.save_as] = str(j["voucher_id"])
        rec = j.get("recovered")
        return {"status": j.get("status"), "reason": j.get("reason"), "amount": j.get("amount_fen"),
                "balance_after": j.get("balance_after_fen"), "recovered": len(rec) if isinstance(rec, list) else
                int(rec or 0), "torn": j.get("torn"), "pending_recovery": j.get("pending_recovery"),
                "voucher": j.get("voucher_id"), "detail": j.get("detail")}

    def _remember(self, terminal_id: str, j: dict[str, Any]) -> None:
        if j.get("status") == "approved" and j.get("voucher_id"):
            self.last_voucher[terminal_id] = str(j["voucher_id"])

    def sync(self, a: SyncStep) -> dict[str, Any]:
        self._need_operator()
        self.provision(a.terminal)
        try:
            r = sync_once(self.home, a.terminal, self.url, transport=self.line, retry=NO_WAIT,
                          batch_size=a.batch_size or BATCH_SIZE)
        except OperatorUnavailable as exc:
            return {"status": "unavailable", "detail": str(exc), **self._pending(a.terminal)}
        if a.terminal not in self.synced:
            self.synced.append(a.terminal)
        return {"status": "ok", "uploaded": r.uploaded, "settled": r.settled, "duplicate": r.duplicate,
                "rejected": len(r.rejected), "pending": r.pending, "pending_amount": r.pending_fen,
                "rejected_reasons": sorted({str(x.get("reason")) for x in r.rejected})}

    def _pending(self, terminal_id: str) -> dict[str, Any]:
        with self.home.ledger(terminal_id) as ledger:
            s = ledger.sync_status()
        return {"pending": s.pending_count, "pending_amount": s.pending_fen}

    def refund(self, a: RefundStep) -> dict[str, Any]:
        self._need_operator()
        self.provision(a.terminal)
        vid = self.voucher(a.terminal, a.voucher)
        try:
            r = request_refund(self.home, a.terminal, vid, a.amount, self.url, transport=self.line, retry=NO_WAIT)
        except OperatorUnavailable as exc:
            return {"status": "unavailable", "detail": str(exc), "voucher": vid}
        except OperatorRefused as exc:
            if isinstance(exc, InvalidInput):
                raise
            return {"status": "refused", "reason": exc.code, "detail": str(exc), "voucher": vid}
        except RefundRefused as exc:
            return {"status": "refused", "reason": "not_settled", "detail": str(exc), "voucher": vid}
        return {"status": "refunded", "amount": int(r["amount_fen"]), "left": int(r["remaining_fen"]),
                "voucher": vid}

    def load(self, a: LoadStep) -> dict[str, Any]:
        try:
            balance, _ = apply_load(self.home, self.card(a.card), amount_fen=a.amount)
        except LoadRefused as exc:
            return {"status": "refused", "reason": exc.reason.value}
        return {"status": "loaded", "balance": balance, "amount": a.amount}

    def kill(self, a: KillStep) -> dict[str, Any]:
        self.armed_kills.add(a.terminal)
        return {"armed": a.terminal}

    def operator(self, a: OperatorChange) -> dict[str, Any]:
        self.line.down = a.state == "down"
        self.line.allow = a.down_after or 0
        return {"operator": a.state, "down_after": a.down_after}

    def _need_operator(self) -> None:
        if self.mode == "none":
            raise ScenarioStepError("this scenario has no operator (operator: none)")


def _outcome(o: Outcome) -> dict[str, Any]:
    return {"status": o.status, "reason": o.reason.value if o.reason else None, "amount": o.amount_fen,
            "balance_after": o.balance_after_fen, "recovered": len(o.recovered), "torn": o.torn,
            "pending_recovery": o.pending_recovery, "voucher": o.voucher_id, "detail": o.detail or None}


def _gate_result(j: dict[str, Any]) -> dict[str, Any]:
    g = j["gate"]
    return {"status": j["status"], "reason": j["reason"], "open": g["open"], "code": g["code"],
            "tickets": g["tickets"], "used": g["used"], "entries_today": g["entries_today"],
            "remaining": g["remaining"], "amount": j.get("amount_fen") or 0,
            "balance_after": j.get("balance_after_fen"), "voucher": j.get("voucher_id")}


def home_at(root: Path, config: Path | None) -> Home:
    """The scenario's home (its merchants.yaml: the scenario's ``config``, else the shipped one)."""
    root.mkdir(parents=True, exist_ok=True)
    return Home(root, config)
