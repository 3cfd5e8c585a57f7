"""Campaign files: an instant-discount campaign (消费立减金) as a tester or the back office writes it, YAML or JSON.

    id: spring-5-off                # 1-32 of a-z, 0-9, - (the campaign's id at the operator)
    name: {zh: 春季消费立减, en: Spring instant discount}
    funded_by: operator             # or the funding merchant's id, e.g. "320508000000101"
    discount: 5.00                  # yuan off each payment
    min_amount: 30.00               # for a payment of at least this much (yuan)
    per_wallet_per_day: 1           # discounts per wallet per China day (default 1)
    merchants: ["320508000000101"]  # where it applies (merchants.yaml ids)
    start: 2026-05-01               # first day, China time, inclusive
    end: 2026-05-31                 # last day, inclusive
    budget: 10000.00                # yuan, all discounts together
    offline_share: 50.00            # optional: what each terminal may give between two syncs (default: 10 discounts)

Validation is strict: unknown or missing keys, floats, a discount not below the minimum, days out of order, a share
under one discount or over the budget, merchants that merchants.yaml does not list, an end day already past: each
is a :class:`CampaignFileError` (bad input, exit 2) naming the file and the key, and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, model_validator

from pos.config import Config, Fen, Names, _Loader
from wallet.card import china_day_text
from wallet.errors import InvalidInput
from wire.campaigns import CampaignRequest

DEFAULT_SHARE_DISCOUNTS = 10  # the default offline share: this many discounts (at most the budget)


class CampaignFileError(InvalidInput):
    """A campaign file cannot be read or breaks a rule; ``problems`` lists each as ``FILE: key: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _merchant_id(value: Any) -> Any:
    """A merchant id written as a bare YAML number is still the id (15 digits, as text)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _day(value: Any) -> str:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date | str):
        raise ValueError("write a day as YYYY-MM-DD")
    text = value.isoformat() if isinstance(value, dt.date) else value
    try:
        if len(text) != 10:
            raise ValueError(text)
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)") from None
    return text


MerchantId = Annotated[str, BeforeValidator(_merchant_id), Field(pattern=r"^\d{15}$")]
Day = Annotated[str, BeforeValidator(_day)]


class CampaignFile(BaseModel):
    """The file's content (amounts in yuan as exact decimals, held as fen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: Names
    funded_by: Annotated[str, BeforeValidator(_merchant_id), Field(pattern=r"^(operator|\d{15})$")]
    discount: Fen = Field(gt=0)
    min_amount: Fen = Field(gt=0)
    per_wallet_per_day: StrictInt = Field(default=1, ge=1, le=100)
    merchants: list[MerchantId] = Field(min_length=1, max_length=1000)
    start: Day
    end: Day
    budget: Fen = Field(gt=0)
    offline_share: Fen | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CampaignFile:
        if len(self.name.zh) > 64 or len(self.name.en) > 64:
            raise ValueError("name: at most 64 characters in each language")
        if self.discount >= self.min_amount:
            raise ValueError("discount: must be less than min_amount (something is left to pay)")
        if self.end < self.start:
            raise ValueError("end: before start")
        if self.offline_share is not None and not self.discount <= self.offline_share <= self.budget:
            raise ValueError("offline_share: at least one discount and at most the budget")
        if self.discount > self.budget:
            raise ValueError("budget: less than one discount")
        if len(set(self.merchants)) != len(self.merchants):
            raise ValueError("merchants: a merchant is listed twice")
        return self

    def request(self) -> CampaignRequest:
        """The operator's request (amounts in fen)."""
        share = self.offline_share or min(self.budget, DEFAULT_SHARE_DISCOUNTS * self.discount)
        return CampaignRequest(campaign_id=self.id, name_zh=self.name.zh, name_en=self.name.en,
                               funded_by=self.funded_by, discount_fen=self.discount, min_amount_fen=self.min_amount,
                               per_wallet_per_day=self.per_wallet_per_day, merchants=list(self.merchants),
                               start=self.start, end=self.end, budget_fen=self.budget, offline_share_fen=share)


class _CampaignLoader(_Loader):
    """merchants.yaml's strict loader (pos.config), with days kept as text (checked here, with the key)."""


_CampaignLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise CampaignFileError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, parse_float=Decimal, object_pairs_hook=_no_duplicates)
        except ValueError as exc:
            raise CampaignFileError([f"{path}: not valid JSON: {exc}"]) from None
    try:
        return yaml.load(text, Loader=_CampaignLoader)  # noqa: S506 - a SafeLoader subclass (pos.config)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise CampaignFileError([f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    except RecursionError:
        raise CampaignFileError([f"{path}: nested too deeply"]) from None


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "list[")):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_campaign(path: Path, config: Config, now_ms: int) -> CampaignRequest:
    """The campaign in ``path`` as the operator's request, checked against ``config`` (its merchants) and today
    (``now_ms``, China day); :class:`CampaignFileError` listing every problem."""
    data = _read(path)
    if not isinstance(data, dict):
        raise CampaignFileError([f"{path}: (top level): expected a mapping of campaign settings"])
    try:
        campaign = CampaignFile.model_validate(data)
    except ValidationError as exc:
        raise CampaignFileError([f"{path}: {_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                                 for e in exc.errors()]) from None
    known = {m.id for m in config.merchants}
    problems = [f"{path}: merchants: {m} is not in merchants.yaml" for m in campaign.merchants if m not in known]
    if campaign.funded_by != "operator" and campaign.funded_by not in known:
        problems.append(f"{path}: funded_by: {campaign.funded_by} is not in merchants.yaml")
    today = china_day_text(now_ms)
    if campaign.end < today:
        problems.append(f"{path}: end: {campaign.end} is past (today is {today})")
    if problems:
        raise CampaignFileError(problems)
    return campaign.request()
