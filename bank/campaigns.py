"""Instant discounts (消费立减金) at the operator: campaigns, and the terminals' offline shares of their budgets.

A campaign takes ``discount_fen`` off a payment of at least ``min_amount_fen`` at its merchants' terminals, from its
start day to its end day (China days, inclusive), at most ``per_wallet_per_day`` times per wallet and day, until its
budget is spent. It is funded by the operator or by a merchant (``funded_by``).

**Shares.** A terminal gives discounts from a share of the budget handed to it at each sync
(:meth:`Campaigns.shares`, ``POST /v1/campaigns/shares``): the campaign's ``offline_share_fen``, or what is left of
the budget when less is left. A new share replaces the terminal's last one: what it did not give returns to the
budget. The operator keeps, per campaign, ``spent`` (paid claims) and each terminal's outstanding share (granted,
less its paid claims since), and never grants more than ``budget - spent - the other terminals' outstanding
shares``, so terminals that keep to their shares never spend more than the budget together. The claims themselves
are judged at settlement (:mod:`bank.claims`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update

from bank.auth import TerminalRecord
from bank.clock import now_ms
from bank.schema import campaign_claims, campaign_shares, campaigns
from bank.store import Store
from wallet.card import china_day_text
from wire.campaigns import CampaignAnswer, CampaignList, CampaignRequest, CampaignShares, TerminalCampaign
from wire.errors import BadRequest, Conflict

_TERMS = ("name_zh", "name_en", "funded_by", "discount_fen", "min_amount_fen", "per_wallet_per_day",
          "budget_fen", "offline_share_fen")


def today() -> str:
    """The operator's China Standard Time day."""
    return china_day_text(now_ms())


def terms(row: Any) -> dict[str, Any]:
    """A campaign row as the fields of a :class:`CampaignRequest`."""
    m = row._mapping
    return {"campaign_id": m["campaign_id"], **{k: m[k] for k in _TERMS}, "merchants": json.loads(m["merchants"]),
            "start": m["start_day"], "end": m["end_day"]}


def outstanding(conn: Connection, campaign_ids: Iterable[str], except_terminal: str | None = None) -> dict[str, int]:
    """Per campaign, the shares terminals hold and have not yet claimed (granted less paid claims, never below 0),
    leaving out ``except_terminal``'s."""
    s = campaign_shares.c
    ids = list(campaign_ids)
    if not ids:
        return {}
    held = case((s.granted_fen > s.claimed_fen, s.granted_fen - s.claimed_fen), else_=0)
    query = select(s.campaign_id, func.coalesce(func.sum(held), 0)).where(s.campaign_id.in_(ids))
    if except_terminal is not None:
        query = query.where(s.terminal_id != except_terminal)
    return {cid: int(total) for cid, total in conn.execute(query.group_by(s.campaign_id)).all()}


def lock_campaigns(conn: Connection, campaign_ids: Iterable[str]) -> dict[str, Any]:
    """The campaigns' rows, locked for the transaction (row locks on PostgreSQL; SQLite's write transaction already
    excludes every other writer): shares and claims of one campaign are decided one transaction at a time."""
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    query = select(campaigns).where(campaigns.c.campaign_id.in_(ids)).order_by(campaigns.c.campaign_id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return {r.campaign_id: r for r in conn.execute(query).all()}


class Campaigns:
    """Campaigns on file: create, list, and each terminal's shares at its sync."""

    def __init__(self, store: Store, terminal_merchants: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.known_merchants = set((terminal_merchants or {}).values())

    def create(self, req: CampaignRequest) -> CampaignAnswer:
        """Put a campaign on file. The same campaign again answers it as on file; another one with its id is a
        :class:`Conflict`. Refused (:class:`BadRequest`): a merchant the operator has no terminal of (when it has a
        terminal list), an end day already past."""
        unknown = [m for m in req.merchants if self.known_merchants and m not in self.known_merchants]
        if unknown:
            raise BadRequest(f"merchants: {', '.join(unknown)} not known to the operator", "unknown_merchant")
        if req.end < today():
            raise BadRequest(f"end: the campaign ended on {req.end}, before today ({today()})", "campaign_ended")
        row = {"campaign_id": req.campaign_id, **{k: getattr(req, k) for k in _TERMS},
               "merchants": json.dumps(req.merchants), "start_day": req.start, "end_day": req.end, "spent_fen": 0,
               "created_ms": now_ms()}

        def write(conn: Connection) -> None:
            have = conn.execute(select(campaigns).where(campaigns.c.campaign_id == req.campaign_id)).first()
            if have is None:
                conn.execute(insert(campaigns).values(**row))
            elif terms(have) != req.model_dump():
                raise Conflict(f"campaign {req.campaign_id} is on file with other terms", "campaign_exists")

        self.store.write(write)
        return next(c for c in self.list_all().campaigns if c.campaign_id == req.campaign_id)

    def list_all(self) -> CampaignList:
        """Every campaign with its spending: budget, spent, reserved by terminals, left, claims paid (flagged) and
        refused."""
        k = campaign_claims.c

        def look(conn: Connection) -> tuple[Sequence[Any], dict[str, int], Sequence[Any]]:
            rows = conn.execute(select(campaigns).order_by(campaigns.c.created_ms, campaigns.c.campaign_id)).all()
            claims = conn.execute(select(k.campaign_id, k.status, k.flag, func.count(),
                                         func.coalesce(func.sum(k.discount_fen), 0))
                                  .group_by(k.campaign_id, k.status, k.flag)).all()
            return rows, outstanding(conn, [r.campaign_id for r in rows]), claims

        rows, held, claims = self.store.read(look)
        stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for cid, status, flag, n, fen in claims:
            stats[cid][status] += int(n)
            stats[cid][status + "_fen"] += int(fen)
            if flag:
                stats[cid]["flagged"] += int(n)
        day = today()
        out = []
        for r in rows:
            s = stats[r.campaign_id]
            reserved = held.get(r.campaign_id, 0)
            status = "scheduled" if day < r.start_day else "ended" if day > r.end_day else "running"
            out.append(CampaignAnswer(
                **terms(r), status=status, spent_fen=r.spent_fen, reserved_fen=reserved,
                left_fen=max(0, r.budget_fen - r.spent_fen - reserved), paid=s["paid"], paid_fen=s["paid_fen"],
                flagged=s["flagged"], refused=s["refused"], refused_fen=s["refused_fen"], created_ms=r.created_ms))
        return CampaignList(campaigns=out)

    def shares(self, terminal: TerminalRecord) -> CampaignShares:
        """The campaigns of the terminal's merchant not yet over, each with a fresh share for the terminal (which
        replaces its last one): the offline share, or what the budget has left beside the other terminals' shares."""
        day, t = today(), now_ms()
        tid = terminal.terminal_id

        def grant(conn: Connection) -> list[TerminalCampaign]:
            candidates = conn.execute(select(campaigns.c.campaign_id, campaigns.c.merchants)
                                      .where(campaigns.c.end_day >= day)).all()
            ids = [cid for cid, merchants in candidates if terminal.merchant_id in json.loads(merchants)]
            rows = lock_campaigns(conn, ids)
            others = outstanding(conn, ids, except_terminal=tid)
            mine = {r.campaign_id for r in conn.execute(select(campaign_shares.c.campaign_id).where(
                campaign_shares.c.terminal_id == tid, campaign_shares.c.campaign_id.in_(ids))).all()} if ids else set()
            out = []
            for cid in sorted(rows):
                r = rows[cid]
                share = max(0, min(r.offline_share_fen, r.budget_fen - r.spent_fen - others.get(cid, 0)))
                values = {"granted_fen": share, "claimed_fen": 0, "granted_ms": t}
                if cid in mine:
                    conn.execute(update(campaign_shares).where(campaign_shares.c.campaign_id == cid,
                                                               campaign_shares.c.terminal_id == tid)
                                 .values(grants=campaign_shares.c.grants + 1, **values))
                else:
                    conn.execute(insert(campaign_shares).values(campaign_id=cid, terminal_id=tid, grants=1,
                                                                **values))
                c = terms(r)
                out.append(TerminalCampaign(
                    campaign_id=cid, name_zh=c["name_zh"], name_en=c["name_en"], discount_fen=c["discount_fen"],
                    min_amount_fen=c["min_amount_fen"], per_wallet_per_day=c["per_wallet_per_day"],
                    start=c["start"], end=c["end"], share_fen=share))
            return out

        granted = self.store.write(grant)
        return CampaignShares(terminal_id=tid, merchant_id=terminal.merchant_id, day=day, campaigns=granted)
