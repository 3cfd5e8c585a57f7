"""The translation layer: both languages for every key, the same fields in both, every key the terminal uses exists,
and no user-facing Chinese outside it."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from pos.gate.ticket_gate import ANTI_PASSBACK, CAPACITY, PAID, PREPAID, GateDecision
from pos.i18n import TEXTS, normalize, other_language, tr
from pos.payment.outcome import Outcome
from pos.payment.reasons import Reason

ROOT = Path(__file__).resolve().parents[2]
TRANSLATION_LAYER = ROOT / "pos" / "i18n"
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_has_both_languages_with_the_same_fields() -> None:
    for key, (zh, en) in TEXTS.items():
        if key.startswith("reason.") and key.endswith(".next"):
            assert bool(zh) == bool(en), key  # a reason may have no next step, then in neither language
        else:
            assert zh and en, key
        assert fields(zh) == fields(en), key
    assert len(TEXTS) > 150


def test_every_reason_code_has_a_message_and_a_next_step() -> None:
    for reason in Reason:
        assert f"reason.{reason.value}" in TEXTS and f"reason.{reason.value}.next" in TEXTS, reason
    codes = {r.value for r in Reason}
    keyed = {k.split(".")[1] for k in TEXTS if k.startswith("reason.")}
    assert keyed == codes  # no text left for a code that is gone
    assert Reason.INSUFFICIENT_BALANCE.message("zh-CN") == "余额不足"
    assert Reason.INSUFFICIENT_BALANCE.next_step("en") == "ask for another wallet"
    assert Reason.CANCELLED.next_step("zh-CN") == ""


def test_every_literal_key_used_by_the_terminal_exists() -> None:
    used: set[str] = set()
    paths = [*sorted((ROOT / "pos" / "ui").rglob("*.py")), ROOT / "pos" / "gate" / "ticket_gate.py",
             ROOT / "pos" / "payment" / "outcome.py", ROOT / "pos" / "records.py", ROOT / "pos" / "cli" / "demo.py"]
    for path in paths:
        used |= set(re.findall(r"""["']((?:key|bar|sync|operator|counter|charge|result|receipt|status|history|"""
                               r"""filter|refund|report|tester|fault|trace|gate|outcome|decline)\.[a-z_]+)["']""",
                               path.read_text(encoding="utf-8")))
    assert len(used) > 50
    assert {"outcome.approved", "outcome.card_removed_pending", "decline.with_next"} <= used
    file_names = {name for name in used if name.endswith((".db", ".tcss"))}  # gate.db, history.tcss, ...
    assert sorted(used - set(TEXTS) - file_names) == []


@pytest.mark.parametrize(("outcome", "zh", "en"), [
    (Outcome("approved", 100), "支付成功", "approved"),
    (Outcome("declined", 100, Reason.OVER_DAILY_LIMIT), "超过当日支付限额", "over the daily limit"),
    (Outcome("declined", 100, Reason.CARD_REMOVED, pending_recovery=True),
     "钱包过早移开：可能已扣款，请将同一钱包再碰一次以完成",
     "wallet removed too early: the wallet may have been charged; tap the same wallet again to finish"),
    (Outcome("declined", 100, Reason.CARD_REMOVED), "钱包过早移开：未扣款",
     "wallet removed too early: the wallet was not charged"),
])
def test_outcome_messages_read_as_before(outcome: Outcome, zh: str, en: str) -> None:
    assert outcome.message("zh-CN") == zh and outcome.message("en") == en
    assert outcome.to_json("en")["message"] == en and outcome.to_json("zh-CN")["message"] == zh


def test_gate_decisions_read_as_before() -> None:
    def decision(code: str, **kw: int) -> GateDecision:
        return GateDecision(open=code in (PAID, PREPAID), code=code, entries_today=1, remaining=2, **kw)

    assert decision(PAID, tickets=2).message("en") == "2 tickets paid: please enter"
    assert decision(PAID, tickets=1).message("en") == "1 ticket paid: please enter"
    assert decision(PREPAID, used=1, tickets=3).message("zh-CN") == "已用票 1/3，请通行"
    passback = decision(ANTI_PASSBACK, used=1, tickets=1, window_s=1800)
    assert passback.message("en") == "this wallet already entered within 30 min (1 of 1 tickets used)"
    assert passback.next_step("zh-CN") == "每人一票：请为同行者另行购票"
    assert decision(CAPACITY).next_step("en") == "please come another day"
    denied = decision(Reason.DENYLISTED.value)
    assert denied.message("zh-CN") == "钱包已被停用"
    assert denied.to_json("en")["message"] == "wallet is on the denylist"
    assert decision(PAID, tickets=1).next_step("zh-CN") == "请通过闸机"


def test_language_names_and_fallbacks() -> None:
    assert normalize("zh_CN.UTF-8") == "zh-CN" and normalize("en_US") == "en" and normalize(None) == "en"
    assert other_language("zh-CN") == "en" and other_language("en") == "zh-CN"
    assert tr("bar.pending", "zh-CN", n=2, amount="¥1.00") == "待结算 2 笔 ¥1.00"
    assert tr("bar.pending", "en", n=2, amount="¥1.00") == "pending 2 · ¥1.00"


def cjk_literals(path: Path) -> list[int]:
    """Lines of string constants with CJK characters in ``path`` (docstrings excluded; comments are not in the AST)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and CJK.search(node.value)]


def test_no_user_facing_chinese_outside_the_translation_layer() -> None:
    offenders: dict[str, list[int]] = {}
    checked = 0
    for package in ("pos", "wallet", "bank"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(TRANSLATION_LAYER):
                continue
            checked += 1
            if lines := cjk_literals(path):
                offenders[str(path.relative_to(ROOT))] = lines
    assert checked > 40
    assert offenders == {}


def test_the_scan_sees_chinese_literals_but_not_docstrings(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('"""模块。"""\n\n\ndef f():\n    """函数。"""\n    # 注释\n    return f"{1}：未扣款"\n',
                    encoding="utf-8")
    assert cjk_literals(path) == [7]
    assert cjk_literals(TRANSLATION_LAYER / "texts.py")  # the table itself is full of them
    assert cjk_literals(TRANSLATION_LAYER / "scene_texts.py")
