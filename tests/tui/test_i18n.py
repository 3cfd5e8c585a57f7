"""The translation table: both languages for every key, the same fields in both, every key the UIs use exists."""

from __future__ import annotations

import re
import string
from pathlib import Path

from pos.i18n import TEXTS, normalize, other_language, tr

ROOT = Path(__file__).resolve().parents[2]


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_has_both_languages_with_the_same_fields() -> None:
    for key, (zh, en) in TEXTS.items():
        assert zh and en, key
        assert fields(zh) == fields(en), key


def test_every_literal_key_used_by_the_uis_exists() -> None:
    used: set[str] = set()
    for path in [*sorted((ROOT / "pos" / "ui").glob("*.py")), ROOT / "pos" / "gate" / "ticket_gate.py"]:
        used |= set(re.findall(r"""["']((?:key|bar|sync|operator|counter|charge|result|receipt|status|history|"""
                               r"""filter|refund|report|tester|fault|trace|gate)\.[a-z_]+)["']""",
                               path.read_text(encoding="utf-8")))
    assert len(used) > 50
    assert sorted(used - set(TEXTS) - {"gate.db"}) == []  # gate.db is a file name


def test_language_names_and_fallbacks() -> None:
    assert normalize("zh_CN.UTF-8") == "zh-CN" and normalize("en_US") == "en" and normalize(None) == "en"
    assert other_language("zh-CN") == "en" and other_language("en") == "zh-CN"
    assert tr("bar.pending", "zh-CN", n=2, amount="¥1.00") == "待结算 2 笔 ¥1.00"
    assert tr("bar.pending", "en", n=2, amount="¥1.00") == "pending 2 · ¥1.00"
