"""CLI commands that involve the operator: serve it, provision terminals, sync, refund, reconcile.

Every command that talks to the operator takes ``--operator URL``, else ``POS_OPERATOR_URL``, else the URL in
merchants.yaml. Exit status: 0 done, 1 refused or unreachable, 2 bad input.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys

from pos.cli.errors import amount
from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet.errors import InvalidInput

DB_URL = re.compile(r"^(sqlite|postgresql)(\+[a-z0-9_]+)?://")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*$")


def check_listen_address(host: str, port: int) -> None:
    """Refuse a host that is neither an IP address nor a name that resolves, and a port outside 1..65535."""
    if not 0 < port < 65536:
        raise InvalidInput("--port must be 1..65535")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host) or not HOSTNAME.match(host):
        raise InvalidInput(f"--host {host!r} is neither an IP address nor a host name")
    try:
        socket.getaddrinfo(host, port)
    except (OSError, UnicodeError):
        raise InvalidInput(f"--host {host!r} does not resolve to an address of this machine") from None


def cmd_operator_serve(args: argparse.Namespace, home: Home) -> int:
    check_listen_address(args.host, args.port)
    if args.db is not None and not DB_URL.match(args.db):
        raise InvalidInput(f"--db {args.db!r}: give an SQLAlchemy URL for SQLite or PostgreSQL, e.g. "
                           "sqlite:////srv/operator.db or postgresql+psycopg://user@host/db")
    if args.workers < 1:
        raise InvalidInput("--workers must be 1 or more")
    if args.workers > 1 and not (args.db or "").startswith("postgresql"):
        raise InvalidInput("SQLite is the single-worker embedded database: --workers above 1 needs PostgreSQL "
                           "(--db postgresql+psycopg://HOST/DB)")
    from pos.composition import serve_operator  # the operator's stack loads only for a valid address
    print(f"operator for home {home.root} on http://{args.host}:{args.port} (OpenAPI at /openapi.json)"
          + (f", {args.workers} worker processes" if args.workers > 1 else ""), file=sys.stderr)
    serve_operator(home, args.host, args.port, args.db, args.workers)
    return EXIT_OK


def cmd_provision(args: argparse.Namespace, home: Home) -> int:
    from pos.sync.client import provision_terminal

    data = provision_terminal(home, args.terminal_id, args.operator)
    emit(args, data, f"terminal {data['terminal_id']} provisioned for merchant {data['merchant_id']} "
                     f"({data['provisioned_by']}): {data['certificate']}")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, home: Home) -> int:
    from pos.sync.upload import SyncProgress, sync_once

    def progress(p: SyncProgress) -> None:
        if not args.json and p.total:
            print(f"  {p.done}/{p.total} answered, {p.left_count} left ({format_fen(p.left_fen)})", file=sys.stderr)

    result = sync_once(home, args.terminal, args.operator, progress)
    data = result.to_json()
    lines = [f"uploaded {result.uploaded}: settled {result.settled}, duplicate {result.duplicate}, "
             f"rejected {len(result.rejected)}; denylist version {result.denylist_version}; "
             f"pending {result.pending}"]
    lines += [f"  REJECTED {r['voucher_id']}: {r['reason']}" for r in result.rejected]
    if t := result.online_tickets:  # a gate of a spot that sells online (docs/tickets.md)
        lines.append(f"online tickets: learnt {t['orders_learnt']} order change(s), reported {t['entries_reported']} "
                     f"entry count(s); today {t['online_sold']} sold online, {t['others_sold']} at other gates")
    lines += [f"  DISCOUNT {c['voucher_id']}: {c['campaign_id']} {format_fen(c['discount_fen'])} {c['status']}"
              + "".join(f" ({c[k]})" for k in ("reason", "flag") if c.get(k)) for c in result.claims]
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_refund(args: argparse.Namespace, home: Home) -> int:
    from pos.sync.client import OperatorRefused
    from pos.sync.refunds import request_refund

    try:
        data = request_refund(home, args.terminal, args.voucher, args.amount, args.operator)
    except OperatorRefused as exc:
        if isinstance(exc, InvalidInput):
            raise
        emit(args, {"status": "refused", "reason": exc.code, "message": str(exc)}, f"REFUSED {exc.code}: {exc}")
        return EXIT_FAILED
    emit(args, data, f"refunded {format_fen(data['amount_fen'])} of {data['voucher_id']} "
                     f"(total refunded {format_fen(data['refunded_total_fen'])}, "
                     f"left {format_fen(data['remaining_fen'])})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, home: Home) -> int:
    from pos.cli.reconcile_cmds import unresolved_lines
    from pos.sync.reports import reconcile

    data = reconcile(home, args.terminal, args.date, args.operator)
    t, o = data["terminal"], data["operator"]
    lines = [f"terminal {data['terminal_id']}  {data['date']}",
             f"  terminal: {t['count']} vouchers {format_fen(t['total_fen'])}; settled {t['settled']['count']} "
             f"{format_fen(t['settled']['total_fen'])}; rejected {t['rejected']['count']}; pending "
             f"{t['pending']['count']}; refunds {format_fen(t['refunds']['total_fen'])}",
             f"  operator: {o.get('count', 0)} vouchers {format_fen(o.get('total_fen', 0))}; settled "
             f"{o['settled']['count']} {format_fen(o['settled']['total_fen'])} (fee "
             f"{format_fen(o['settled']['fee_fen'])}); rejected {o['rejected']['count']}; refunds "
             f"{format_fen(o['refunds']['total_fen'])}",
             "  MATCHES" if data["matches"] else f"  DIFFERENCES ({len(data['differences'])}):"]
    lines += [f"    {d.get('voucher_id') or d.get('refund_id')}: {d['field']} terminal={d['terminal']} "
              f"operator={d['operator']}  ({d['note']})" for d in data["differences"]]
    lines += [f"  FLAGGED {f[4]}: {f[0]} wallet {f[1]} {format_fen(f[2])} {f[3]} (terminal clock "
              f"{f[5] / 3_600_000:+.1f} h)" for f in o.get("flags", [])]
    lines += unresolved_lines(data.get("unresolved", {}))
    td, od = t.get("discounts") or {}, o.get("discounts") or {}
    if td.get("count") or od.get("paid") or od.get("refused"):  # instant discounts (docs/campaigns.md)
        lines.append(f"  discounts: terminal {td.get('count', 0)} {format_fen(td.get('total_fen', 0))}; operator "
                     f"paid {od.get('paid', 0)} {format_fen(od.get('paid_fen', 0))} (flagged "
                     f"{od.get('flagged', 0)}), refused {od.get('refused', 0)} {format_fen(od.get('refused_fen', 0))}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK if data["matches"] else EXIT_FAILED


def register(commands: Commands) -> None:
    """Add ``operator serve``, ``terminal provision``, ``sync``, ``refund`` and ``report``."""
    commands.group("operator", "the operator backend (the bank)")
    p = commands.add("serve", cmd_operator_serve, "run the operator HTTP service", group="operator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: sqlite file HOME/operator/operator.db)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the port (above 1: PostgreSQL only)")

    commands.group("terminal", "terminal keys and certificates")
    p = commands.add("provision", cmd_provision, "give a terminal its key and operator certificate",
                     group="terminal")
    p.add_argument("terminal_id", metavar="TID")
    p.add_argument("--operator", metavar="URL")

    p = commands.add("sync", cmd_sync, "upload pending vouchers, record settlements, fetch the denylist")
    p.add_argument("--terminal", required=True)
    p.add_argument("--operator", metavar="URL")

    p = commands.add("refund", cmd_refund, "refund all or part of a settled voucher")
    p.add_argument("--terminal", required=True)
    p.add_argument("--voucher", required=True, metavar="VID")
    p.add_argument("--amount", type=amount, metavar="YUAN", help="default: all that is left")
    p.add_argument("--operator", metavar="URL")

    p = commands.add("report", cmd_report, "compare the terminal's day with the operator's settlement report")
    p.add_argument("--terminal", required=True)
    p.add_argument("--date", metavar="YYYY-MM-DD", help="China Standard Time day (default: today)")
    p.add_argument("--operator", metavar="URL")
