"""What ``pos operator serve --workers N`` hands each worker: every setting, none left at its default."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from bank.asgi import settings_from_json, settings_to_json
from bank.chains import Chain
from bank.settings import OperatorSettings
from bank.tickets import TicketSpot


def _all_set(tmp_path: Path) -> OperatorSettings:
    return OperatorSettings(
        db_url="postgresql+psycopg://h/db", pki_dir=tmp_path / "pki", admin_token_path=tmp_path / "t",
        terminal_merchants={"CMGQ0001": "320508000000101"}, fee_bps=7, offline_single_max=50_000,
        fault="after_commit", verify_threads=3, max_batch_bytes=1234, max_json_bytes=567, db_retries=9,
        chains=(Chain("P1", ("S1", "S2"), "daily"),),
        ticket_spots={"320508000000301": TicketSpot({"adult": 7000}, 500)})


def test_every_setting_reaches_the_workers(tmp_path: Path) -> None:
    settings = _all_set(tmp_path)
    defaults = OperatorSettings(db_url="", pki_dir=Path())
    unset = [f.name for f in fields(settings) if getattr(settings, f.name) == getattr(defaults, f.name)]
    assert unset == [], f"give these settings a non-default value above so the round trip covers them: {unset}"
    assert settings_from_json(settings_to_json(settings)) == replace(settings, fault=None)


def test_a_settings_file_from_an_older_operator_keeps_the_new_defaults(tmp_path: Path) -> None:
    old = {"db_url": "sqlite:///x.db", "pki_dir": str(tmp_path), "unknown_setting": 1}
    assert settings_from_json(old) == OperatorSettings(db_url="sqlite:///x.db", pki_dir=tmp_path)
