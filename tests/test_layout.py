"""Repository layout: nfcpy (import name `nfc`) and the project's NFC layer (`ecny_nfc`) live side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nfcpy_and_project_nfc_layer_in_one_process() -> None:
    import ecny_nfc.nfcpy_reader
    import ecny_nfc.reader
    import nfc

    assert hasattr(nfc, "ContactlessFrontend")
    assert Path(nfc.__file__).resolve().parent != (ROOT / "nfc").resolve()  # nfcpy, not the folder nfc/
    assert Path(ecny_nfc.reader.__file__).parent == ROOT / "nfc"
    assert ecny_nfc.nfcpy_reader.NfcpyReader.__module__ == "ecny_nfc.nfcpy_reader"  # the layer over nfcpy loads


def test_repo_root_does_not_shadow_nfcpy() -> None:
    """Run from the repository root (where the folder nfc/ is), ``import nfc`` is still nfcpy."""
    code = ("import nfc, ecny_nfc.factory, ecny_nfc.mock, ecny_nfc.nfcpy_reader; "
            "print(nfc.ContactlessFrontend.__module__, nfc.__file__, ecny_nfc.mock.__file__, sep=chr(10))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    clf_module, nfc_file, mock_file = out.splitlines()
    assert clf_module == "nfc.clf"
    assert Path(nfc_file).resolve().parent != (ROOT / "nfc").resolve()
    assert Path(mock_file).resolve() == (ROOT / "nfc" / "mock.py").resolve()


def test_one_exception_base() -> None:
    import ecny_nfc.reader as r
    import pos.config as cfg
    import pos.ledger as led
    import pos.payment.card_client as cc
    import wallet.errors as e

    for exc in (r.ReaderError, r.CardRemoved, cc.CardStatusError, cfg.ConfigError, led.LedgerTampered,
                e.CertificateError, e.SignatureError, e.CardStoreError, e.InvalidInput):
        assert issubclass(exc, e.EcnyError)
