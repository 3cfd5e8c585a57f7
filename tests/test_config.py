"""merchants.yaml: the shipped file is valid; a bad file names the file, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pos.config import PACKAGE_DEFAULT, ConfigError, load_config

SHIPPED = PACKAGE_DEFAULT.read_text()


def test_shipped_config_models_a_pilot_city() -> None:
    cfg = load_config(PACKAGE_DEFAULT)
    cats = [m.category for m in cfg.merchants]
    assert cats.count("scenic_spot") == 2 and {"carrier_store", "museum", "restaurant"} <= set(cats)
    for m in cfg.merchants:
        assert len(m.id) == 15 and m.name.zh and m.name.en
        if m.category in ("scenic_spot", "museum"):
            assert {p.sku for p in m.tickets} == {"adult", "child", "concession"}
            assert any(t.kind == "gate" for t in m.terminals) and any(t.kind == "counter" for t in m.terminals)
    assert cfg.operator.fee_bps == 0
    assert cfg.risk.offline_single_max == 50_000
    fan = next(p for m in cfg.merchants for p in m.catalog if p.sku == "charger")
    assert fan.price == 5990  # 59.90 read exactly, never through a float


@pytest.mark.parametrize(("edit", "where", "what"), [
    (("id: CMGQ0002", "id: CMGQ02"), "merchants[0].terminals[1].id", "pattern"),
    (("price: 59.90", "price: 59.999"), "merchants[0].catalog[4].price", "two decimals"),
    (("price: 59.90", "price: -3"), "merchants[0].catalog[4].price", "bad amount"),
    (("kind: gate, name: {zh: 南门闸机", "kind: turnstile, name: {zh: 南门闸机"), "merchants[2].terminals[0].kind", ""),
    (("fee_bps: 0", "fee_bps: 0\n  colour: red"), "operator.colour", "Extra inputs"),
    (('id: "320508000000201"', 'id: "320508000000101"'), "(top level)", "merchant ids must be unique"),
    (("offline_count_max: 10", "offline_count_max: 10\n  offline_count_max: 11"), "", "duplicate key"),
    (("merchants:", "merchants: [\n"), "", "not valid YAML"),
])
def test_bad_file_one_clear_message(tmp_path: Path, edit, where, what) -> None:
    old, new = edit
    assert old in SHIPPED
    bad = tmp_path / "merchants.yaml"
    bad.write_text(SHIPPED.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert msg.startswith(str(bad))
    assert where in msg and what in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_terminal_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="CMGQ0001"):
        load_config(PACKAGE_DEFAULT).terminal("ZZZZ9999")
