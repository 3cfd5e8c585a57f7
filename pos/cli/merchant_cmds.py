"""``pos merchant statement`` and ``pos merchant sweep``: merchants' corporate wallets and chains' cash pooling, from
the operator's back office (:mod:`bank.statements`, :mod:`bank.chains`).

Both ask the operator (``--operator URL``, else ``POS_OPERATOR_URL``, else merchants.yaml's) with the admin token;
when it cannot be reached they read and write the home's embedded operator in-process, as ``pos terminal
provision`` does. Exit status: 0 done, 1 refused (e.g. a day that is not over), 2 bad input (an unknown merchant).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet import clock
from wallet.card import CHINA_TZ

MERCHANT = re.compile(r"\d{15}")


def _merchant_id(text: str) -> str:
    if not MERCHANT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a merchant id (15 digits; `pos merchants` lists them)")
    return text


def _day(text: str) -> str:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD") from None
    return text


def _today(days_back: int = 0) -> str:
    """The China Standard Time business day on this command's clock (``--now``), ``days_back`` days ago."""
    return (clock.now().astimezone(CHINA_TZ).date() - dt.timedelta(days=days_back)).isoformat()


class BackOffice:
    """The operator's merchant back office: over HTTP, else (unreachable) the home's embedded operator, opened once
    per command. Use as a context manager."""

    def __init__(self, home: Home, url: str | None) -> None:
        self.home = home
        self.url = url
        self.via = "operator"
        self._local = contextlib.ExitStack()
        self._op: Any = None

    def __enter__(self) -> BackOffice:
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.close()

    def ask(self, method: str, path: str, local: Callable[[Any], Any]) -> dict[str, Any]:
        from pos.sync.client import OperatorClient, OperatorUnavailable, RetryPolicy

        if self.via == "operator":
            try:
                with OperatorClient.for_admin(self.home, self.url, retry=RetryPolicy(attempts=2),
                                              timeout=30.0) as cli:
                    return cli.call(method, path, {} if method == "POST" else None, signed=False)
            except OperatorUnavailable:
                self.via = "local"
        if self._op is None:
            from pos.composition import local_operator

            self._op = self._local.enter_context(local_operator(self.home))
        return dict(local(self._op).model_dump(mode="json"))

    def statement(self, merchant_id: str, day: str) -> dict[str, Any]:
        return self.ask("GET", f"/v1/admin/merchants/{merchant_id}/statements/{day}",
                        lambda op: op.statement(merchant_id, day))

    def sweep(self, day: str, parent_id: str | None) -> dict[str, Any]:
        query = f"?parent={parent_id}" if parent_id else ""
        return self.ask("POST", f"/v1/admin/sweeps/{day}{query}", lambda op: op.sweep(day, parent_id))


def _refused(args: argparse.Namespace, home: Home, fn: Callable[[BackOffice], int]) -> int:
    """``fn(back office)``, with the operator's refusal (a 409 over HTTP, a :class:`Conflict` in-process) as exit
    1."""
    from pos.sync.client import OperatorRefused
    from wallet.errors import InvalidInput
    from wire.errors import Conflict

    try:
        with BackOffice(home, args.operator) as office:
            return fn(office)
    except (OperatorRefused, Conflict) as exc:
        if isinstance(exc, InvalidInput):  # the operator's 400 and 404 (an unknown merchant): bad input, exit 2
            raise InvalidInput(str(exc)) from exc
        code = str(getattr(exc, "code", "refused"))
        emit(args, {"status": "refused", "reason": code, "message": str(exc)}, f"REFUSED {code}: {exc}")
        return EXIT_FAILED


def cmd_statement(args: argparse.Namespace, home: Home) -> int:
    day = args.date or _today()

    def run(office: BackOffice) -> int:
        data = office.statement(args.merchant, day)
        if data["sweep_due"]:  # a closed day of a pooling chain: its sweep runs first (once, whoever asks)
            office.sweep(day, data["merchant_id"] if data["role"] == "parent" else data["parent_id"])
            data = office.statement(args.merchant, day)
        data["answered_by"] = office.via
        emit(args, data, _statement_text(home, data))
        return EXIT_OK

    return _refused(args, home, run)


def cmd_sweep(args: argparse.Namespace, home: Home) -> int:
    day = args.date or _today(1)

    def run(office: BackOffice) -> int:
        data = office.sweep(day, args.merchant)
        data["answered_by"] = office.via
        lines = [f"sweep of {day}: moved {format_fen(data['moved_fen'])}"]
        lines += [f"  {s['store_id']} -> {s['parent_id']}  {s['day']}  {format_fen(s['amount_fen']):>12}  "
                  f"({s['movements']} movements{', on file already' if s['replayed'] else ''})"
                  for s in data["sweeps"]]
        if not data["sweeps"]:
            lines.append("  no pooling chain (a parent with `pools: daily` in merchants.yaml)")
        emit(args, data, "\n".join(lines))
        return EXIT_OK

    return _refused(args, home, run)


def _name(home: Home, merchant_id: str) -> str:
    for m in home.config.merchants:
        if m.id == merchant_id:
            return f"{m.name.zh} / {m.name.en}"
    return ""


COLUMNS = ("count", "gross_fen", "discount_fen", "refunds_fen", "fee_fen", "net_fen")


def _row(label: str, line: dict[str, Any]) -> str:
    return f"    {label:<16}{line['count']:>6}" + "".join(f"{format_fen(line[c]):>14}" for c in COLUMNS[1:])


def _stores(n: int) -> str:
    return f"{n} store{'' if n == 1 else 's'}"


def _statement_text(home: Home, d: dict[str, Any]) -> str:
    role = {"merchant": "", "store": f"store of {d['parent_id']}",
            "parent": f"parent of {_stores(len([s for s in d['stores'] if s['merchant_id'] != d['merchant_id']]))}"
            }[d["role"]] + (f", pools {d['pools']}" if d["pools"] else "")
    out = [f"statement of {d['merchant_id']}  {_name(home, d['merchant_id'])}  {d['date']} "
           f"({'closed' if d['closed'] else 'open: so far'}){'  ' + role if role else ''}",
           "    " + f"{'':<16}{'count':>6}" + "".join(f"{c.removesuffix('_fen'):>14}" for c in COLUMNS[1:])]
    for s in d["stores"]:
        out.append(f"  {s['merchant_id']}  {_name(home, s['merchant_id'])}")
        out += [_row(x["terminal_id"] or x["kind"], x) for x in s["lines"]]
        out.append(_row("total", s["totals"]))
        if s["sweep"]:
            out.append(f"    swept to {s['sweep']['parent_id']}: {format_fen(s['sweep']['amount_fen'])}")
        elif s["sweep_due"]:
            out.append("    sweep due")
    if len(d["stores"]) > 1:
        out.append(_row("all stores", d["totals"]))
    if d["role"] == "parent":
        out.append(f"  received by sweeps: {format_fen(d['swept_in_fen'])} from {_stores(len(d['sweeps_in']))}")
    out.append(f"  wallet {d['merchant_id']}: opening {format_fen(d['opening_fen'])}, closing "
               f"{format_fen(d['closing_fen'])}")
    return "\n".join(out)


def register(commands: Commands) -> None:
    """Add ``merchant statement`` and ``merchant sweep``."""
    commands.group("merchant", "merchants' corporate wallets and chains")
    p = commands.add("statement", cmd_statement, "a corporate wallet's statement for one business day "
                     "(a closed day of a pooling chain is swept first)", group="merchant")
    p.add_argument("--merchant", type=_merchant_id, required=True, metavar="MID")
    p.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="business day, China Standard Time "
                                                                   "(default: today)")
    p.add_argument("--operator", metavar="URL")
    p = commands.add("sweep", cmd_sweep, "move each pooling store's day net to its chain's parent, exactly once",
                     group="merchant")
    p.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="a closed business day (default: yesterday)")
    p.add_argument("--merchant", type=_merchant_id, metavar="PARENT", help="only this chain (default: every "
                                                                           "pooling chain)")
    p.add_argument("--operator", metavar="URL")
