"""Repository layout: nfcpy (import name `nfc`) and the project's NFC layer (`ecny_nfc`) live side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nfcpy_and_project_nfc_layer_in_one_process() -> None:
    import ecny_nfc.reader
    import nfc

    assert hasattr(nfc, "ContactlessFrontend")
    assert Path(ecny_nfc.reader.__file__).parent == ROOT / "nfc"


def test_repo_root_does_not_shadow_nfcpy() -> None:
    code = "import nfc, ecny_nfc.mock; print(nfc.ContactlessFrontend.__module__, ecny_nfc.mock.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.startswith("nfc.clf ") and "/nfc/mock.py" in out


def test_one_exception_base() -> None:
    import ecny_nfc.reader as r
    import pos.config as cfg
    import pos.ledger as led
    import pos.payment.card_client as cc
    import wallet.errors as e

    for exc in (r.ReaderError, r.CardRemoved, cc.CardStatusError, cfg.ConfigError, led.LedgerTampered,
                e.CertificateError, e.SignatureError, e.CardStoreError, e.InvalidInput):
        assert issubclass(exc, e.EcnyError)
