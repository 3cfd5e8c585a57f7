"""The operator's campaign API (instant discounts, :mod:`bank.campaigns`): back-office calls to create and list
campaigns, and the terminal call that hands a terminal its campaigns and offline shares at each sync."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from bank.app import ADMIN, Terminal, _json_body, errors, parse_body
from bank.campaigns import Campaigns
from bank.service import Operator
from wire.campaigns import CampaignAnswer, CampaignList, CampaignRequest, CampaignShares


def add_campaign_routes(app: FastAPI, op: Operator) -> None:
    """``POST``/``GET /v1/admin/campaigns`` and ``POST /v1/campaigns/shares`` on ``app``."""
    service = Campaigns(op.store, op.terminal_merchants)

    @app.post("/v1/admin/campaigns", dependencies=ADMIN, response_model=CampaignAnswer,
              responses=errors(409, 413), openapi_extra=_json_body(CampaignRequest))
    async def create_campaign(request: Request) -> CampaignAnswer:
        """Put an instant-discount campaign on file (idempotent for the same terms; 409 for other terms under its
        id). Refused 400: a merchant the operator has no terminal of, an end day already past."""
        req = parse_body(CampaignRequest, await request.body())
        return await run_in_threadpool(service.create, req)

    @app.get("/v1/admin/campaigns", dependencies=ADMIN, response_model=CampaignList, responses=errors())
    def list_campaigns() -> CampaignList:
        """Every campaign: its terms, budget, spent, reserved by terminals' shares, left, and its claims paid
        (flagged) and refused."""
        return service.list_all()

    @app.post("/v1/campaigns/shares", response_model=CampaignShares, responses=errors(403, 413))
    def shares(term: Terminal) -> CampaignShares:
        """The campaigns of the terminal's merchant that are not over, each with a fresh offline share of its budget
        for this terminal (replacing its last one). The body is ignored (send ``{}``)."""
        return service.shares(term)
