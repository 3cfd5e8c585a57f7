"""nfcpy (import name ``nfc``) and the project's NFC layer (``ecny_nfc``, folder nfc/) live in one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ecny_nfc.nfcpy_reader
import ecny_nfc.reader
import nfc

ROOT = Path(__file__).resolve().parents[2]


def test_nfcpy_and_ecny_nfc_in_one_process() -> None:
    assert hasattr(nfc, "ContactlessFrontend")
    assert Path(nfc.__file__).parent != ROOT / "nfc"
    assert Path(ecny_nfc.reader.__file__).parent == ROOT / "nfc"
    assert ecny_nfc.nfcpy_reader.NfcpyReader is not None


def test_repository_root_does_not_shadow_nfcpy() -> None:
    code = ("import nfc, ecny_nfc.factory, ecny_nfc.nfcpy_reader; "
            "print(nfc.__file__); print(hasattr(nfc, 'ContactlessFrontend'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    nfc_file, has_clf = out.stdout.split()
    assert has_clf == "True"
    assert Path(nfc_file).resolve().parent != (ROOT / "nfc").resolve()
