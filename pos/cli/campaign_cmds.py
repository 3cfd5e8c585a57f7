"""``pos campaign create|list``: instant-discount campaigns (消费立减金) at the operator (docs/campaigns.md).

Back-office calls with the operator's admin token (``--operator URL``, else ``POS_OPERATOR_URL``, else
merchants.yaml); when no operator answers, the home's embedded operator is used, as for cards and provisioning.
A bad campaign file is bad input (exit 2) and nothing is sent; a campaign id on file with other terms is refused
(exit 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet import clock
from wire.campaigns import CampaignAnswer, CampaignList, CampaignRequest


def _create(home: Home, req: CampaignRequest, operator_url: str | None) -> tuple[CampaignAnswer, str]:
    from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy

    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=2), timeout=10.0) as cli:
            return CampaignAnswer.model_validate(cli.call("POST", "/v1/admin/campaigns", req.model_dump(),
                                                          signed=False)), "operator"
    except OperatorUnavailable:
        pass
    from bank.campaigns import Campaigns
    from pos.composition import local_operator

    with local_operator(home) as op:
        return Campaigns(op.store, op.terminal_merchants).create(req), "local"


def _list(home: Home, operator_url: str | None) -> CampaignList:
    from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy

    try:
        with OperatorClient.for_admin(home, operator_url, retry=RetryPolicy(attempts=2), timeout=10.0) as cli:
            return CampaignList.model_validate(cli.call("GET", "/v1/admin/campaigns", signed=False))
    except OperatorUnavailable:
        pass
    from bank.campaigns import Campaigns
    from pos.composition import local_operator

    with local_operator(home) as op:
        return Campaigns(op.store, op.terminal_merchants).list_all()


def describe(c: CampaignAnswer) -> str:
    """A campaign in three lines: terms, days and merchants, money."""
    funder = "the operator" if c.funded_by == "operator" else f"merchant {c.funded_by}"
    return "\n".join([
        f"{c.campaign_id}  {c.name_zh} / {c.name_en}  [{c.status}]  funded by {funder}",
        f"    {format_fen(c.discount_fen)} off a payment of {format_fen(c.min_amount_fen)} or more, "
        f"{c.per_wallet_per_day} per wallet a day; {c.start}..{c.end}; at {', '.join(c.merchants)}",
        f"    budget {format_fen(c.budget_fen)}  spent {format_fen(c.spent_fen)}  reserved "
        f"{format_fen(c.reserved_fen)} (terminal share {format_fen(c.offline_share_fen)})  left "
        f"{format_fen(c.left_fen)}  paid {c.paid} (flagged {c.flagged})  refused {c.refused} "
        f"{format_fen(c.refused_fen)}"])


def cmd_campaign_create(args: argparse.Namespace, home: Home) -> int:
    from pos.campaign_file import load_campaign
    from pos.sync.client import OperatorBadInput, OperatorRefused

    req = load_campaign(Path(args.file), home.config, clock.now_ms())  # bad input: exit 2, nothing sent
    try:
        answer, via = _create(home, req, args.operator)
    except OperatorRefused as exc:
        if isinstance(exc, OperatorBadInput):
            raise
        emit(args, {"status": "refused", "reason": exc.code, "message": str(exc)}, f"REFUSED {exc.code}: {exc}")
        return EXIT_FAILED
    data: dict[str, Any] = {**answer.to_json(), "created_by": via}
    emit(args, data, f"campaign {answer.campaign_id} on file ({via})\n{describe(answer)}")
    return EXIT_OK


def cmd_campaign_list(args: argparse.Namespace, home: Home) -> int:
    answer = _list(home, args.operator)
    emit(args, answer.to_json(), "\n".join(describe(c) for c in answer.campaigns)
         or "no campaigns: create one with `pos campaign create --file FILE`")
    return EXIT_OK


def register(commands: Commands) -> None:
    """Add ``campaign create`` and ``campaign list``."""
    commands.group("campaign", "instant-discount campaigns at the operator")
    p = commands.add("create", cmd_campaign_create, "put an instant-discount campaign on file at the operator",
                     group="campaign")
    p.add_argument("--file", required=True, metavar="FILE", help="the campaign, YAML or JSON (docs/campaigns.md)")
    p.add_argument("--operator", metavar="URL")
    p = commands.add("list", cmd_campaign_list, "campaigns with their budget, spent, reserved, paid, flagged, refused",
                     group="campaign")
    p.add_argument("--operator", metavar="URL")
