"""The testers' commands end to end: `pos card present --nfc udp:...` in one process, `pos pay --reader udp:...` in
another, both through nfcpy's real stack and the shared card store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

POS = [sys.executable, "-m", "pos.cli.main"]


def test_present_then_pay_over_nfcpy_udp(tmp_path: Path) -> None:
    env = {**os.environ, "POS_HOME": str(tmp_path)}
    issued = json.loads(subprocess.run([*POS, "card", "issue", "--tier", "4", "--balance", "100", "--json"],
                                       env=env, capture_output=True, text=True, check=True, timeout=60).stdout)
    card = issued["cards"][0]
    present = subprocess.Popen([*POS, "card", "present", card["card_id"], "--nfc", "udp:127.0.0.1:0", "--once",
                                "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert present.stdout is not None
        ready = json.loads(present.stdout.readline())
        assert ready["event"] == "ready" and ready["at"].startswith("udp:127.0.0.1:")
        paid = subprocess.run([*POS, "pay", "--terminal", "CMGQ0001", "--amount", "12.30", "--reader", ready["at"],
                               "--timeout", "10", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert paid.returncode == 0, paid.stderr
        out = json.loads(paid.stdout)
        assert out["status"] == "approved" and out["amount_fen"] == 1230
        assert out["voucher_id"] == f"{card['wallet_id']}-00000001"
        tap = json.loads(present.stdout.readline())
        assert tap["event"] == "tap" and not tap["torn"] and tap["balance_fen"] == 10_000 - 1230
        assert present.wait(timeout=15) == 0  # --once: done after one completed tap
    finally:
        if present.poll() is None:
            present.kill()
            present.wait()
    shown = json.loads(subprocess.run([*POS, "card", "show", card["card_id"], "--json"], env=env,
                                      capture_output=True, text=True, check=True).stdout)
    assert shown["balance_fen"] == 10_000 - 1230 and shown["counter"] == 1


def test_present_refuses_bad_usage(tmp_path: Path) -> None:
    env = {**os.environ, "POS_HOME": str(tmp_path)}
    both = subprocess.run([*POS, "card", "present", "c0001", "--nfc", "udp:127.0.0.1:0", "--vpcd", "localhost:1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = subprocess.run([*POS, "card", "present", "c0009", "--nfc", "udp:127.0.0.1:0"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "c0009" in missing.stderr
