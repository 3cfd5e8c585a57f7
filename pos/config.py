"""merchants.yaml: demo merchants, terminals, catalogs, tickets, the operator endpoint and offline risk settings.

The file is validated on load; a bad file raises :class:`ConfigError` naming the file, the key path and the problem.
Prices are written in yuan and held as integer fen; YAML numbers are read as exact decimals, never floats. What YAML
1.1 would quietly turn into something else is refused with the line it is on: ``.nan``/``.inf``, sexagesimal numbers
(``1:30``), keys that are not plain scalars, duplicate keys, anchors and aliases (no "billion laughs"), nesting
deeper than 32 levels, and bytes that are not UTF-8.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from pos.money import parse_yuan
from wallet.errors import InvalidInput
from wallet.limits import OfflineCaps

PACKAGE_DEFAULT = Path(__file__).resolve().parent.parent / "merchants.yaml"


class ConfigError(InvalidInput):
    """merchants.yaml (or another config file) is missing or invalid."""


class KeyProblem(ValueError):
    """A problem a validator finds deeper than the field it checks: ``loc`` is the rest of the key path."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc


def _yuan(value: Any) -> int:
    if isinstance(value, float):
        raise ValueError("write amounts as exact decimals, e.g. 12.50")
    try:
        return parse_yuan(value)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


Fen = Annotated[int, BeforeValidator(_yuan)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(_Model):
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def get(self, lang: str) -> str:
        return self.zh if lang.startswith("zh") else self.en


class Product(_Model):
    sku: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: Names
    price: Fen


class Terminal(_Model):
    id: str = Field(pattern=r"^[A-Z0-9]{8}$")
    kind: Literal["counter", "gate"]
    name: Names | None = None


class GateSettings(_Model):
    daily_capacity: int = Field(default=5000, gt=0)
    passback_window_s: int = Field(default=600, ge=0)
    result_hold_s: float = Field(default=2.0, gt=0, le=30)
    online_tickets: bool = False  # the spot also sells tickets online (docs/tickets.md)


class Merchant(_Model):
    id: str = Field(pattern=r"^\d{15}$")
    name: Names
    category: Literal["carrier_store", "scenic_spot", "museum", "restaurant", "shop", "company"]
    terminals: list[Terminal] = []  # at least one, except for a chain's parent (checked with the chains)
    catalog: list[Product] = []
    tickets: list[Product] = []
    gate: GateSettings | None = None
    parent: str | None = Field(default=None, pattern=r"^\d{15}$")  # the chain this store belongs to
    pools: Literal["daily"] | None = None  # on a parent: its stores' takings move to it every business day

    @model_validator(mode="after")
    def _gates_sell_tickets(self) -> Merchant:
        if any(t.kind == "gate" for t in self.terminals) and not self.tickets:
            raise ValueError("a merchant with gate terminals needs tickets")
        skus = [p.sku for p in (*self.catalog, *self.tickets)]
        if len(skus) != len(set(skus)):
            raise ValueError("product skus must be unique within a merchant")
        return self


class OperatorSettings(_Model):
    name: Names
    url: str = Field(pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    code: str = Field(default="", max_length=32, pattern=r"^[A-Za-z0-9_.-]*$")  # acquirer code on receipts
    fee_bps: int = Field(default=0, ge=0, le=10000)
    sync_interval_s: float = Field(default=60, ge=0, le=86400)  # the UIs' background sync; 0: only on F5


class RiskSettings(_Model):
    offline_single_max: Fen = 50_000
    offline_cumulative_max: Fen = 500_000
    offline_count_max: int = Field(default=10, ge=1, le=65535)
    tap_timeout_s: float = Field(default=30, gt=0, le=600)
    recovery_timeout_s: float = Field(default=10, ge=0, le=600)

    @property
    def caps(self) -> OfflineCaps:
        return OfflineCaps(self.offline_single_max, self.offline_cumulative_max, self.offline_count_max)


class ClockSettings(_Model):
    """How far off the terminal's clock (learnt from the operator at each sync) may be: beyond ``warn_skew_s`` the
    status bar warns, beyond ``stop_skew_s`` the terminal stops selling offline (declines ``clock_skew``)."""

    warn_skew_s: float = Field(default=300, gt=0, le=86400)
    stop_skew_s: float = Field(default=3600, gt=0, le=7 * 86400)

    @property
    def warn_ms(self) -> int:
        return int(self.warn_skew_s * 1000)

    @property
    def stop_ms(self) -> int:
        return int(self.stop_skew_s * 1000)


class Config(_Model):
    operator: OperatorSettings
    risk: RiskSettings = RiskSettings()
    clock: ClockSettings = ClockSettings()
    language: Literal["zh-CN", "en"] = "zh-CN"
    printer: str | None = Field(default=None, pattern=r"^(tty:[^\s]+|file:.+)$")  # receipt printer (pos.printer)
    merchants: list[Merchant] = Field(min_length=1)

    @field_validator("merchants")
    @classmethod
    def _chains(cls, merchants: list[Merchant]) -> list[Merchant]:
        check_chains(merchants)
        return merchants

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        mids = [m.id for m in self.merchants]
        if len(mids) != len(set(mids)):
            raise ValueError("merchant ids must be unique")
        tids = [t.id for m in self.merchants for t in m.terminals]
        if len(tids) != len(set(tids)):
            raise ValueError("terminal ids must be unique")
        return self

    def terminal(self, terminal_id: str) -> tuple[Merchant, Terminal]:
        """The merchant and terminal for ``terminal_id``; raises :class:`ConfigError` when unknown."""
        for m in self.merchants:
            for t in m.terminals:
                if t.id == terminal_id:
                    return m, t
        known = ", ".join(t.id for m in self.merchants for t in m.terminals)
        raise ConfigError(f"unknown terminal {terminal_id!r}; merchants.yaml has: {known}")

    def first_terminal(self, kind: str) -> str:
        for m in self.merchants:
            for t in m.terminals:
                if t.kind == kind:
                    return t.id
        raise ConfigError(f"merchants.yaml has no {kind} terminal")


def check_chains(merchants: list[Merchant]) -> None:
    """Chains are one level deep: a store names a merchant of the file as its ``parent``; a parent has no parent;
    ``pools`` is set on parents only; only a parent may have no terminals. Raises :class:`KeyProblem`."""
    index = {m.id: i for i, m in enumerate(merchants)}
    parents = {m.parent for m in merchants if m.parent is not None}
    for i, m in enumerate(merchants):
        if m.parent == m.id:
            raise KeyProblem((i, "parent"), f"merchant {m.id} names itself as its parent")
        if m.parent is not None and m.parent not in index:
            raise KeyProblem((i, "parent"), f"{m.parent} is not a merchant in this file (add it, with `pools: "
                                            "daily` if its stores pool their takings)")
    for i, m in enumerate(merchants):
        if m.parent is None:
            continue
        seen: list[str] = [m.id]
        at: str | None = m.parent
        while at is not None and at not in seen:
            seen.append(at)
            at = merchants[index[at]].parent
        if at is not None:
            raise KeyProblem((i, "parent"), f"the parents go round in a circle: {' -> '.join([*seen, at])}")
        up = merchants[index[m.parent]]
        if up.parent is not None:
            raise KeyProblem((i, "parent"), f"{m.parent} belongs to chain {up.parent} itself: a chain is one "
                                            "level deep (name the top merchant as the parent)")
    for i, m in enumerate(merchants):
        if m.pools is not None and m.id not in parents:
            raise KeyProblem((i, "pools"), f"no store names {m.id} as its parent: `pools` belongs on a chain's "
                                           "parent")
        if not m.terminals and m.id not in parents:
            raise KeyProblem((i, "terminals"), "a merchant needs at least one terminal (only a chain's parent may "
                                               "have none)")


MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """Safe YAML with exact decimals for floats, refusing duplicate and complex keys, aliases and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed: "
                                              "write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _refuse(node: yaml.Node, problem: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _construct_decimal(loader: _Loader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node))
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise _refuse(node, f"{text!r} is not a plain decimal number (write e.g. 12.50)") from None
    if not value.is_finite():
        raise _refuse(node, f"{text!r} is not a number (write e.g. 12.50)")
    return value


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if ":" in text:
        raise _refuse(node, f"{text!r} is a YAML 1.1 base-60 number: quote it, or write the plain number")
    return int(yaml.constructor.SafeConstructor.construct_yaml_int(loader, node))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _refuse(key_node, "keys must be plain names, not lists or mappings")
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError as exc:  # 2026-02-30: looks like a date, is none
        raise _refuse(node, f"{node.value!r} is not a date ({exc})") from None


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "list[")):
            out += f".{part}" if out else part
    return out or "(top level)"


def load_config(path: Path) -> Config:
    """Load and validate a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of settings")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        deeper = err.get("ctx", {}).get("error")
        loc = (*err["loc"], *deeper.loc) if isinstance(deeper, KeyProblem) else err["loc"]
        raise ConfigError(f"{path}: {_loc(loc)}: {msg}{more}") from None


def find_config(explicit: str | os.PathLike[str] | None, home: Path) -> Path:
    """Where the config comes from: ``--config``, ``POS_CONFIG``, ``HOME/merchants.yaml``, else the shipped one."""
    for candidate in (explicit, os.environ.get("POS_CONFIG")):
        if candidate:
            return Path(candidate)
    if (home / "merchants.yaml").exists():
        return home / "merchants.yaml"
    return PACKAGE_DEFAULT
