"""The translation layer: ``tr(key, lang, **fields)`` is how every user-facing text of the terminal is said.

The texts live in :mod:`pos.i18n.texts`, in Chinese (zh-CN) and English. Domain code keeps codes and data (decline
reason codes, gate decision codes, amounts) and asks this layer for the words. A missing key raises ``KeyError`` (a
test checks that every key used exists in both languages with the same fields).
"""

from __future__ import annotations

import locale
import os
from typing import Any

from pos.i18n.texts import TEXTS

__all__ = ["TEXTS", "default_language", "normalize", "other_language", "tr"]


def normalize(lang: str | None) -> str:
    """``zh``, ``zh_CN.UTF-8``, ``zh-CN`` -> ``zh-CN``; anything else -> ``en``."""
    return "zh-CN" if lang and lang.lower().replace("_", "-").startswith("zh") else "en"


def other_language(lang: str) -> str:
    return "en" if normalize(lang) == "zh-CN" else "zh-CN"


def tr(key: str, lang: str, **fields: Any) -> str:
    """The text for ``key`` in ``lang`` with ``fields`` filled in."""
    zh, en = TEXTS[key]
    text = zh if normalize(lang) == "zh-CN" else en
    return text.format(**fields) if fields else text


def default_language(configured: str | None = None) -> str:
    """``POS_LANG``, else the configured language (merchants.yaml), else the locale."""
    env = os.environ.get("POS_LANG")
    if env:
        return normalize(env)
    if configured:
        return normalize(configured)
    return normalize(locale.getlocale()[0] or os.environ.get("LANG"))
