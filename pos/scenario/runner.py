"""Running a scenario: a fresh home on a virtual clock, the steps in order, every expectation checked.

A failed expectation does not stop the run: the rest still runs and every failure is reported. A step that cannot
run at all (an unknown card, a refused file) is an error of that step, reported the same way.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pos.ledger import LedgerTampered
from pos.scenario.schema import Checks, Scenario, Step, fill, parse_step
from pos.scenario.world import ScenarioStepError, World, home_at
from pos.sync.client import OperatorUnavailable
from pos.sync.reports import reconcile, today
from wallet import clock
from wallet.clock import VirtualClock
from wallet.errors import EcnyError

MONEY_KEYS = frozenset({"balance", "balance_after", "amount", "left", "pending_amount", "offline_amount",
                        "day_spent"})
SCRATCH = Path("/dev/shm")  # noqa: S108 - mkdtemp parent: a home in memory, no disk flush


@dataclass
class Failure:
    key: str
    expected: Any
    actual: Any


@dataclass
class StepResult:
    path: str
    line: int
    kind: str
    clock_ms: int
    summary: str
    actual: dict[str, Any]
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.error is None


@dataclass
class ScenarioResult:
    file: str
    name: str
    home: str
    steps: list[StepResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if not s.ok]


Sink = Callable[[StepResult], None]


def run_scenario(sc: Scenario, home_dir: Path | None = None, on_step: Sink | None = None) -> ScenarioResult:
    """Run ``sc`` in ``home_dir`` (default: a temporary home, removed afterwards) on its virtual clock."""
    if home_dir is None:
        scratch = str(SCRATCH) if SCRATCH.is_dir() and os.access(SCRATCH, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="pos-scenario-", dir=scratch) as tmp:
            return run_scenario(sc, Path(tmp), on_step)
    start = sc.header.clock if sc.header.clock is not None else clock.now_ms()
    vclock = VirtualClock(start)
    config = sc.path.parent / sc.header.config if sc.header.config else None
    result = ScenarioResult(str(sc.path), sc.name, str(home_dir))
    t0 = time.perf_counter()
    with clock.use(vclock):
        world = World(home_at(home_dir, config), vclock, sc.header.operator)
        runner = _Runner(sc, world, result, on_step)
        try:
            world.start()
            if sc.header.cards:
                runner.do(Step("issue", sc.header.cards, None, 0, "cards"))
            for step in sc.steps:
                runner.run(step)
        finally:
            world.close()
    result.elapsed_s = time.perf_counter() - t0
    return result


class _Runner:
    def __init__(self, sc: Scenario, world: World, result: ScenarioResult, on_step: Sink | None) -> None:
        self.sc = sc
        self.world = world
        self.result = result
        self.on_step = on_step

    def run(self, step: Step) -> None:
        if step.kind != "repeat":
            self.do(step)
            return
        for i in range(1, step.times + 1):
            for j, raw in enumerate(fill(step.raw, i)):
                problems: list[str] = []
                inner = parse_step(raw, self.sc.path, {}, (), problems)
                if inner is None:
                    self._emit(StepResult(f"{step.path}#{i}.steps[{j}]", step.line, "repeat", self.world.clock.ms,
                                          "repeat", {}, error="; ".join(problems)))
                    continue
                inner.path, inner.line = f"{step.path}#{i}.steps[{j}]", step.body[j].line
                self.run(inner)

    def do(self, step: Step) -> None:
        t0 = time.perf_counter()
        at = self.world.clock.ms
        res = StepResult(step.path, step.line, step.kind, at, describe(step), {})
        try:
            res.actual = self.act(step)
            expected = step.action if step.kind == "expect" else step.expect
            if expected is not None:
                res.failures = compare(expected, res.actual)
        except (EcnyError, OSError, ValueError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"
        res.elapsed_ms = (time.perf_counter() - t0) * 1e3
        self._emit(res)

    def _emit(self, res: StepResult) -> None:
        self.result.steps.append(res)
        if self.on_step is not None:
            self.on_step(res)

    def act(self, step: Step) -> dict[str, Any]:
        w, a = self.world, step.action
        if step.kind == "advance":
            return {"clock_ms": w.clock.advance(a)}
        if step.kind == "until":
            w.clock.set(a)
            return {"clock_ms": a}
        if step.kind == "expect":
            return self.check(a)
        handler: Callable[[Any], dict[str, Any]] = getattr(w, step.kind)
        return handler(a)

    def check(self, c: Checks) -> dict[str, Any]:
        """The actual values of what a standalone ``expect`` names."""
        w = self.world
        out: dict[str, Any] = {}
        asked = c.model_dump(exclude_none=True)
        if c.card is not None:
            s = w.state(c.card)
            out.update(card=c.card, balance=s.balance_fen, counter=s.counter, offline_count=s.offline_count,
                       offline_amount=s.offline_amount, day_spent=s.day_spent, status=_card_status(s))
        if c.ledger_verify is not None:
            with w.home.ledger(c.ledger_verify) as ledger:
                try:
                    ledger.verify()
                    out["ledger_verify"] = c.ledger_verify
                except LedgerTampered as exc:
                    out["ledger_verify"] = f"tampered: {exc}"
        if c.report_matches is not None:
            try:
                w.provision(c.report_matches)
                data = reconcile(w.home, c.report_matches, c.date or today(), w.url, transport=w.line)
                out["report_matches"] = c.report_matches if data["matches"] else \
                    f"differences: {data['differences']}"
            except OperatorUnavailable as exc:
                out["report_matches"] = f"unavailable: {exc}"
        for key, want in (("denylisted", True), ("not_denylisted", False)):
            name = asked.get(key)
            if name is not None:
                out[key] = name if self._denylisted(name, c.terminal) == want else f"{'not ' if want else ''}on " \
                                                                                  f"the denylist"
        if "date" in asked:
            out["date"] = c.date
        if "terminal" in asked:
            out["terminal"] = c.terminal
        return out

    def _denylisted(self, name: str, terminal: str | None) -> bool:
        w = self.world
        wallet_id = w.state(name).wallet_id
        terminals = [terminal] if terminal else w.synced
        if not terminals:
            raise ScenarioStepError("no terminal has synced yet: name one with terminal:")
        listed = []
        for tid in terminals:
            with w.home.ledger(tid) as ledger:
                listed.append(ledger.is_denylisted(wallet_id))
        return all(listed)


def _card_status(state: Any) -> str:
    from wallet.protocol import STATUS_ACTIVE

    return "active" if state.status == STATUS_ACTIVE else "blocked"


def compare(expected: BaseModel, actual: dict[str, Any]) -> list[Failure]:
    """Each expected key against what happened (a key the step does not report fails with ``None``)."""
    return [Failure(k, v, actual.get(k)) for k, v in expected.model_dump(exclude_none=True).items()
            if actual.get(k) != v]


def describe(step: Step) -> str:
    """One line saying what the step does."""
    a = step.action
    if step.kind == "pay":
        extra = "".join(f" {k}={v}" for k, v in a.model_dump(exclude_defaults=True).items()
                        if k not in ("terminal", "card", "amount"))
        return f"pay {a.terminal} {a.card} {fmt('amount', a.amount)}{extra}"
    if step.kind == "gate":
        return f"gate {a.terminal} {a.card} via ui" if a.via == "ui" else \
            f"gate {a.terminal} {a.card} {a.product} x{a.quantity}"
    if step.kind in ("sync", "kill"):
        return f"{step.kind} {a.terminal}"
    if step.kind == "refund":
        return f"refund {a.terminal} {a.voucher}" + (f" {fmt('amount', a.amount)}" if a.amount else "")
    if step.kind == "load":
        return f"load {a.card} {fmt('amount', a.amount)}"
    if step.kind == "issue":
        return f"issue {', '.join(a)}"
    if step.kind == "operator":
        return f"operator {a.state}" + (f" after {a.down_after} requests" if a.down_after else "")
    if step.kind == "advance":
        return f"advance {a // 60_000} min" if a % 60_000 == 0 else f"advance {a} ms"
    if step.kind == "until":
        return f"until {clock.from_ms(a).astimezone(clock.CHINA_TZ):%Y-%m-%d %H:%M:%S}"
    if step.kind == "expect":
        return "expect " + ", ".join(f"{k}={fmt(k, v)}" for k, v in a.model_dump(exclude_none=True).items())
    return step.kind


def fmt(key: str, value: Any) -> str:
    """A value as the tester wrote it (money in yuan)."""
    if key in MONEY_KEYS and isinstance(value, int) and not isinstance(value, bool):
        sign = "-" if value < 0 else ""
        return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"
    return str(value)
