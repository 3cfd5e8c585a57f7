"""``pos fleet run``: the fleet simulator (see :mod:`pos.fleet`). Exit 0 when the books balance, 1 when anything is
lost, doubled or mismatched, 2 on bad options."""

from __future__ import annotations

import argparse
import os

from pos.cli.main import EXIT_FAILED, EXIT_OK, Commands, emit
from pos.home import Home


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a fraction between 0 and 1")
    return value


def cmd_fleet_run(args: argparse.Namespace, home: Home) -> int:
    from pos.fleet.plan import FleetOptions
    from pos.fleet.run import FleetRun, balanced, run_fleet

    opts = FleetOptions(terminals=args.terminals, wallets=args.wallets, taps=args.taps, gates=args.gates,
                        days=args.days, clones=args.clones, tears=args.tears, outages=args.outages, seed=args.seed,
                        shards=args.shards or min(args.terminals, args.wallets, os.cpu_count() or 1))
    result = run_fleet(FleetRun(home.root, opts, args.operator, args.workers, args.db, progress=not args.quiet))
    ok = balanced(result)
    text = (f"{result['taps']} taps on {result['terminals']} terminals by {result['wallets']} wallets: "
            f"{result['approved']} approved, {result['declined']} declined ({result['torn']} torn)\n"
            f"settled {result['settled']}, duplicates {result['duplicates']}, double spends "
            f"{result['double_spends']}, clones caught {result['clones']}/{result['clones_spent']}\n"
            f"lost {result['lost']}, doubled {result['doubled']}, reports matching {result['reports_matching']}/"
            f"{result['terminals']}, card balances off {result['balance_errors']}\n"
            f"{result['seconds']} s: {result['taps_per_s']} taps/s, {result['settled_per_s']} settled/s\n"
            + ("BOOKS BALANCE" if ok else "BOOKS DO NOT BALANCE"))
    emit(args, result, text)
    return EXIT_OK if ok else EXIT_FAILED


def register(commands: Commands) -> None:
    """Add ``fleet run``."""
    commands.group("fleet", "simulate a fleet of terminals and check the books")
    p = commands.add("run", cmd_fleet_run, "play taps across many terminals offline, sync them all, check the books",
                     group="fleet")
    p.add_argument("--terminals", type=int, default=4, metavar="T")
    p.add_argument("--wallets", type=int, default=20, metavar="W")
    p.add_argument("--taps", type=int, default=200, metavar="N")
    p.add_argument("--gates", type=int, default=0, metavar="G", help="how many of the terminals are ticket gates")
    p.add_argument("--days", type=int, default=1, metavar="D", help="days of taps, each ended by a sync of all")
    p.add_argument("--clones", type=_fraction, default=0.0, metavar="F", help="fraction of wallets cloned")
    p.add_argument("--tears", type=_fraction, default=0.0, metavar="F", help="fraction of taps torn mid-PAY")
    p.add_argument("--outages", type=_fraction, default=0.0, metavar="F",
                   help="fraction of terminals whose last sync meets an operator outage first")
    p.add_argument("--operator", default="embedded", metavar="embedded|URL",
                   help="a child operator serving this home (default), or one at URL serving the same home")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="operator worker processes (embedded)")
    p.add_argument("--db", metavar="URL", help="the embedded operator's database (default: SQLite in the home)")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--shards", type=int, default=0, metavar="P", help="processes playing taps (default: cores)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
