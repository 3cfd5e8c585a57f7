"""The scenario file's schema (pydantic): what each key means, and the parse into steps the runner executes.

A contract: testers keep these files in their repositories. Money is in yuan (``12.30``), times are ISO 8601 (China
time without an offset), durations are ``90m``, ``2h``, ``1d``, ``30s`` or ``500ms`` (parts may be combined:
``1h30m``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pos.money import parse_yuan
from pos.scenario.loader import ScenarioFileError, key_path, line_of, load_yaml
from wallet.clock import parse_instant
from wallet.errors import InvalidInput


def _money(value: Any, positive: bool) -> int:
    if isinstance(value, float):
        value = Decimal(str(value))
    if not isinstance(value, int | str | Decimal) or isinstance(value, bool):
        raise ValueError("give an amount in yuan, e.g. 12.30")
    try:
        return parse_yuan(value, allow_zero=not positive)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def _instant(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("give an ISO 8601 time, e.g. 2026-03-01T09:00:00+08:00")
    try:
        return parse_instant(value)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")


def parse_duration(value: Any) -> int:
    """``1h30m`` in milliseconds."""
    text = str(value).strip().replace(" ", "")
    if not isinstance(value, str) or not text or _PART.sub("", text):
        raise ValueError(f"{value!r} is not a duration such as 90m, 2h, 1d, 30s or 1h30m")
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))


Money = Annotated[int, BeforeValidator(lambda v: _money(v, False))]  # yuan in the file, fen here
Amount = Annotated[int, BeforeValidator(lambda v: _money(v, True))]
Instant = Annotated[int, BeforeValidator(_instant)]  # ms since the epoch
Duration = Annotated[int, BeforeValidator(parse_duration)]
TEAR_POINTS = ("select", "read-info", "pay")
UI_WAIT_S = 60.0  # via: ui: how long a step waits for the running terminal (the clerk opens the charge) by default


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardSpec(Strict):
    """A card to issue: ``{tier: 4, balance: 100.00}``; or an attack copy: ``{clone_of: alice}``."""

    tier: Literal[1, 2, 3, 4] = 4
    balance: Money = 0
    count: int = Field(1, ge=1, le=10_000)  # with ${i} in the name: names for i = 1..count
    clone_of: str | None = None
    without_key: bool = False  # a clone that copies what the card shows but not its key
    expired: bool = False
    foreign: bool = False  # certified by an issuer the terminals do not trust
    expires_at: Instant | None = None  # a certificate that ends at this (virtual) time


class PayStep(Strict):
    terminal: str
    card: str
    amount: Amount
    tear_after: Annotated[int, Field(ge=0)] | Literal["select", "read-info", "pay"] | None = None
    retap: bool = False
    corrupt: int | None = Field(None, ge=1)  # flip a byte in the N-th response (from 1)
    slow: float = Field(0.0, ge=0, le=10)
    power_loss: bool = False
    timeout: float = Field(2.0, gt=0, le=600)  # via: ui: default UI_WAIT_S
    save_as: str | None = None  # name the voucher for a later refund: voucher: NAME
    via: Literal["direct", "ui"] = "direct"  # ui: tap the card on the running terminal (pos run) by its socket

    @model_validator(mode="after")
    def _plain_tap_via_ui(self) -> PayStep:
        faults = sorted({"tear_after", "retap", "corrupt", "slow", "power_loss"} & self.model_fields_set)
        if self.via == "ui" and faults:
            raise ValueError(f"via: ui taps the card as it is: leave out {', '.join(faults)}")
        return self


class PayExpect(Strict):
    status: Literal["approved", "declined", "killed"] | None = None
    reason: str | None = None
    balance_after: Money | None = None
    amount: Money | None = None
    recovered: int | None = None
    torn: bool | None = None
    pending_recovery: bool | None = None


class GateStep(Strict):
    terminal: str
    card: str
    product: str = "adult"
    quantity: int = Field(1, ge=1, le=20)
    timeout: float = Field(2.0, gt=0, le=600)  # via: ui: default UI_WAIT_S
    via: Literal["direct", "ui"] = "direct"  # ui: tap the card on the running gate (pos gate) by its socket

    @model_validator(mode="after")
    def _screen_selection_via_ui(self) -> GateStep:
        if self.via == "ui" and {"product", "quantity"} & self.model_fields_set:
            raise ValueError("via: ui: the gate screen's ticket and quantity apply; leave out product and quantity")
        return self


class GateExpect(Strict):
    status: Literal["approved", "declined"] | None = None
    reason: str | None = None
    open: bool | None = None
    code: str | None = None
    tickets: int | None = None
    used: int | None = None
    entries_today: int | None = None
    remaining: int | None = None
    amount: Money | None = None
    balance_after: Money | None = None


class SyncStep(Strict):
    terminal: str
    batch_size: int | None = Field(None, ge=1, le=5000)


class SyncExpect(Strict):
    status: Literal["ok", "unavailable", "failed"] | None = None
    uploaded: int | None = None
    settled: int | None = None
    duplicate: int | None = None
    rejected: int | None = None
    pending: int | None = None
    pending_amount: Money | None = None


class RefundStep(Strict):
    terminal: str
    voucher: str = "last"  # last (the terminal's last approved payment), a save_as name, or a voucher id
    amount: Amount | None = None  # default: all that is left


class RefundExpect(Strict):
    status: Literal["refunded", "refused", "unavailable"] | None = None
    amount: Money | None = None
    left: Money | None = None  # what may still be refunded of the voucher


class LoadStep(Strict):
    card: str
    amount: Amount


class LoadExpect(Strict):
    status: Literal["loaded", "refused"] | None = None
    reason: str | None = None
    balance: Money | None = None


class KillStep(Strict):
    terminal: str
    after: Literal["pay"] = "pay"


class OperatorChange(Strict):
    state: Literal["down", "up"] = "down"
    down_after: int | None = Field(None, ge=0)  # requests that still get through before it goes down


class Checks(Strict):
    """A standalone ``expect``: a card's state, a ledger's chain, the day's report, the denylist."""

    card: str | None = None
    balance: Money | None = None
    counter: int | None = None
    offline_count: int | None = None
    offline_amount: Money | None = None
    day_spent: Money | None = None
    status: Literal["active", "blocked"] | None = None
    ledger_verify: str | None = None
    report_matches: str | None = None
    date: str | None = None  # the report's day (default: the virtual today)
    denylisted: str | None = None
    not_denylisted: str | None = None
    terminal: str | None = None  # whose denylist (default: every terminal synced so far)


ACTIONS: dict[str, tuple[Any, type[BaseModel] | None]] = {  # key: (its value's type, its expect model)
    "pay": (PayStep, PayExpect), "gate": (GateStep, GateExpect), "sync": (SyncStep, SyncExpect),
    "refund": (RefundStep, RefundExpect), "load": (LoadStep, LoadExpect), "kill": (KillStep, None),
    "issue": (dict[str, CardSpec], None), "operator": (OperatorChange, None), "advance": (Duration, None),
    "until": (Instant, None), "repeat": (None, None), "expect": (Checks, None),
}


class Header(Strict):
    name: str
    description: str = ""
    clock: Instant | None = None
    config: str | None = None
    operator: str = "embedded"  # embedded | none | http://HOST:PORT
    cards: dict[str, CardSpec] = {}
    steps: list[Any] = Field(min_length=1)


@dataclass
class Step:
    kind: str
    action: Any
    expect: BaseModel | None
    line: int
    path: str
    note: str = ""
    times: int = 0  # repeat
    raw: Any = None  # repeat: the steps, ${i} not yet filled in
    body: list[Step] = field(default_factory=list)  # repeat: the steps with i = 1 (checked)


@dataclass
class Scenario:
    path: Path
    header: Header
    steps: list[Step]

    @property
    def name(self) -> str:
        return self.header.name


def _problems(exc: ValidationError, file: Path, data: Any, prefix: tuple[Any, ...]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{file}:{line_of(data, loc)}: {key_path(loc)}: {msg}")
    return out


_ADAPTERS = {kind: TypeAdapter(model) for kind, (model, _) in ACTIONS.items() if model is not None}


def _adapt(kind: str, value: Any) -> Any:
    if kind == "operator" and isinstance(value, str):
        value = {"state": value}
    return _ADAPTERS[kind].validate_python(value)


def fill(raw: Any, i: int) -> Any:
    """``raw`` with every ``${i}`` replaced by ``i``."""
    if isinstance(raw, str):
        return raw.replace("${i}", str(i))
    if isinstance(raw, dict):
        return {k: fill(v, i) for k, v in raw.items()}
    if isinstance(raw, list):
        return [fill(v, i) for v in raw]
    return raw


def parse_step(raw: Any, file: Path, data: Any, loc: tuple[Any, ...], problems: list[str]) -> Step | None:
    """One step (``loc`` is its key path in ``data``); appends what is wrong to ``problems``."""
    where = f"{file}:{line_of(data, loc)}: {key_path(loc)}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: a step is a mapping such as {{pay: {{...}}, expect: {{...}}}}")
        return None
    kinds = [k for k in raw if k in ACTIONS and k != "expect"] or (["expect"] if "expect" in raw else [])
    unknown = [k for k in raw if k not in ACTIONS and k != "note"]
    if unknown or len(kinds) != 1:
        what = (f"unknown key {unknown[0]!r}" if unknown else "no action" if not kinds
                else f"one action per step, got {', '.join(kinds)}")
        problems.append(f"{where}: {what} (actions: {', '.join(ACTIONS)})")
        return None
    kind = kinds[0]
    step = Step(kind, None, None, line_of(data, loc), key_path(loc), note=str(raw.get("note") or ""))
    ok = True
    if kind == "repeat":
        return _parse_repeat(step, raw["repeat"], file, data, loc, problems)
    try:
        step.action = _adapt(kind, raw[kind])
    except ValidationError as exc:
        problems += _problems(exc, file, data, (*loc, kind))
        ok = False
    if kind != "expect" and "expect" in raw:
        model = ACTIONS[kind][1]
        if model is None:
            problems.append(f"{file}:{line_of(data, (*loc, 'expect'))}: {key_path((*loc, 'expect'))}: "
                            f"a {kind} step has no outcome to expect; use a step of its own: - expect: {{...}}")
            ok = False
        else:
            try:
                step.expect = model.model_validate(raw["expect"])
            except ValidationError as exc:
                problems += _problems(exc, file, data, (*loc, "expect"))
                ok = False
    return step if ok else None


def _parse_repeat(step: Step, raw: Any, file: Path, data: Any, loc: tuple[Any, ...],
                  problems: list[str]) -> Step | None:
    where = f"{file}:{line_of(data, (*loc, 'repeat'))}: {key_path((*loc, 'repeat'))}"
    if not isinstance(raw, dict) or set(raw) - {"times", "steps"} or "steps" not in raw:
        problems.append(f"{where}: write repeat: {{times: N, steps: [...]}}")
        return None
    times = raw.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= 100_000:
        problems.append(f"{where}.times: a whole number from 1 to 100000")
        return None
    if not isinstance(raw["steps"], list) or not raw["steps"]:
        problems.append(f"{where}.steps: a list of steps")
        return None
    before = len(problems)
    first = fill(raw["steps"], 1)
    body = [parse_step(s, file, data, (*loc, "repeat", "steps", j), problems) for j, s in enumerate(first)]
    if len(problems) > before:
        return None
    step.times, step.raw, step.body = times, raw["steps"], [b for b in body if b is not None]
    return step


def parse_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; raises :class:`ScenarioFileError` listing every problem found."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioFileError([f"{path}:1: a scenario is a mapping with name, clock, cards and steps"])
    problems: list[str] = []
    try:
        header = Header.model_validate(data)
    except ValidationError as exc:
        raise ScenarioFileError(_problems(exc, path, data, ())) from None
    steps = [parse_step(raw, path, data, ("steps", i), problems) for i, raw in enumerate(header.steps)]
    op = header.operator
    if op not in ("embedded", "none") and not op.startswith(("http://", "https://")):
        problems.append(f"{path}:{line_of(data, ('operator',))}: operator: embedded, none or a URL, got {op!r}")
    if header.config is not None and not (path.parent / header.config).is_file():
        problems.append(f"{path}:{line_of(data, ('config',))}: config: no file {path.parent / header.config}")
    if problems:
        raise ScenarioFileError(problems)
    return Scenario(path, header, [s for s in steps if s is not None])
