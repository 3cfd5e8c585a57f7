"""``pos operator reconcile``: the back office's reconciliation of what is still unresolved; and the lines
``pos report`` prints for the terminal's unresolved items (docs/operator.md, "Reconciliation")."""

from __future__ import annotations

import argparse
from typing import Any

from pos.cli.errors import bounded_int
from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home
from pos.money import format_fen
from wallet.ids import check_wallet_id


def item_line(i: dict[str, Any]) -> str:
    """One reported item: status, terminal, wallet, counter, amount, and what happens next."""
    where = f"wallet {i['wallet_id']} counter {i['counter']}" if i.get("wallet_id") else "wallet unknown"
    chain = f", chain {i['chain']}" if i.get("chain") else ""
    return (f"{i['status'].upper()} {i['terminal_id']} intent {i['intent']} ({i['state']}{chain}): {where} "
            f"{format_fen(i['amount_fen'])}; next: {i['next']}")


def gap_line(g: dict[str, Any]) -> str:
    span = f"counter {g['first']}" if g["first"] == g["last"] else f"counters {g['first']}-{g['last']}"
    left = "" if g.get("gap_fen") is None else f", {format_fen(g['gap_fen'])} left the card"
    return (f"GAP wallet {g['wallet_id']} {span} (next payment at {g['next_terminal']}{left}; "
            f"{g['reported']} reported): {g['next']}")


def unresolved_lines(unresolved: dict[str, Any]) -> list[str]:
    """What ``pos report`` prints under the day's comparison (nothing when nothing is unresolved)."""
    items, gaps = unresolved.get("items", []), unresolved.get("gaps", [])
    if not items and not gaps:
        return []
    return ([f"  UNRESOLVED ({len(items)} here, {len(gaps)} gaps not reported whole):"]
            + [f"    {item_line(i)}" for i in items] + [f"    {gap_line(g)}" for g in gaps])


def cmd_operator_reconcile(args: argparse.Namespace, home: Home) -> int:
    from pos.sync.client import OperatorClient
    from pos.sync.unresolved import operator_reconciliation

    if args.wallet is not None:
        check_wallet_id(args.wallet)
    with OperatorClient.for_admin(home, args.operator) as cli:
        data = operator_reconciliation(cli, args.wallet, args.limit)
    lines = [f"checked {data['wallets']} wallets, {data['vouchers']} settled vouchers: {len(data['items'])} "
             f"reported items, {data['gaps_total']} gaps, {data['breaks_total']} balance breaks"]
    lines += [f"  {item_line(i)}" for i in data["items"]]
    lines += [f"  {gap_line(g)}" for g in data["gaps"]]
    lines += [f"  BREAK wallet {b['wallet_id']} counter {b['counter']} at {b['terminal_id']}: signed "
              f"{format_fen(b['balance_after_fen'])}, expected {format_fen(b['expected_fen'])} after "
              f"{'the opening balance' if b['previous'] == 0 else 'counter ' + str(b['previous'])}; next: {b['next']}"
              for b in data["breaks"]]
    emit(args, data, "\n".join(lines))
    return EXIT_FAILED if data["items"] or data["gaps_total"] or data["breaks_total"] else EXIT_OK


def register(commands: Commands) -> None:
    """Add ``operator reconcile``."""
    p = commands.add("reconcile", cmd_operator_reconcile, "the operator's reconciliation: gaps in wallets' "
                     "counters, balance breaks, terminals' unresolved charges", group="operator")
    p.add_argument("--wallet", metavar="WALLET_ID", help="one wallet only")
    p.add_argument("--limit", type=bounded_int(1, 100_000), metavar="N", help="gaps and breaks listed (default 1000)")
    p.add_argument("--operator", metavar="URL")
