"""The fleet simulator at a size that finishes in minutes: ``pos fleet run`` in a fresh home, its JSON printed.

    .venv/bin/python benchmarks/fleet.py [--terminals 20] [--gates 4] [--wallets 500] [--taps 5000] [...]

Any other ``pos fleet run`` option is passed through (``--workers 2 --db postgresql+psycopg://...``); issue 14's run
is ``--terminals 1000 --gates 20 --wallets 100000 --taps 1000000 --days 2 --clones 0.01 --tears 0.01
--outages 0.05`` (figures in docs/scale.md).
"""

from __future__ import annotations

import sys
import tempfile

from pos.cli.main import main

DEFAULTS = ["--terminals", "20", "--gates", "4", "--wallets", "500", "--taps", "5000", "--clones", "0.02",
            "--tears", "0.01", "--outages", "0.1", "--days", "2"]

if __name__ == "__main__":
    home = tempfile.mkdtemp(prefix="ecny-fleet-")
    raise SystemExit(main(["--home", home, "--json", "fleet", "run", *DEFAULTS, *sys.argv[1:]]))
