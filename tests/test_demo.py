"""The headless demo runs on a fresh home, and again on the same home."""

from __future__ import annotations

import json

from pos.cli.main import main


def test_demo_twice(capsys, tmp_path) -> None:
    for run in range(2):
        assert main(["--home", str(tmp_path), "demo", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        got = [(p["status"], p["reason"]) for p in data["payments"]]
        assert got == [("approved", None), ("declined", "insufficient_balance"), ("declined", "over_offline_limit"),
                       ("declined", "expired_certificate"), ("approved", None), ("approved", None)]
        assert data["payments"][4]["torn"] is True
        assert data["ledger"]["verified"] is True
        assert data["ledger"]["pending_count"] == 3 * (run + 1)
