"""What a scenario run shows: one transcript line per step (virtual clock, step, outcome), expected against actual
for every failure, the full result as JSON, and JUnit XML for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pos.scenario.runner import ScenarioResult, StepResult, fmt
from wallet.clock import CHINA_TZ, from_ms

SHOWN = ("status", "reason", "balance_after", "balance", "recovered", "open", "code", "used", "remaining", "pending",
         "settled", "rejected", "amount", "left", "issued", "operator", "armed")


def clock_text(ms: int) -> str:
    return f"{from_ms(ms).astimezone(CHINA_TZ):%m-%d %H:%M:%S}"


def outcome_text(res: StepResult) -> str:
    if res.error is not None:
        return f"ERROR {res.error}"
    if res.kind == "expect":
        return ""
    return " ".join(f"{k}={fmt(k, res.actual[k])}" for k in SHOWN if res.actual.get(k) not in (None, ""))


def step_lines(res: StepResult) -> list[str]:
    """The transcript of one step: its line, then expected against actual for each failure."""
    verdict = "ok" if res.ok else ("ERROR" if res.error else "FAIL")
    out = outcome_text(res)
    lines = [f"{clock_text(res.clock_ms)}  {res.path:<24} {res.summary}{'  -> ' + out if out else ''}  [{verdict}]"]
    lines += [f"    line {res.line}: {f.key}: expected {fmt(f.key, f.expected)}, got {fmt(f.key, f.actual)}"
              for f in res.failures]
    return lines


def summary_line(result: ScenarioResult) -> str:
    bad = result.failed
    n = len(result.steps)
    per = result.elapsed_s * 1e3 / n if n else 0.0
    head = "PASS" if not bad else "FAIL"
    return (f"{head} {result.name} ({result.file}): {n} steps, {len(bad)} failed, {result.elapsed_s:.2f} s "
            f"({per:.1f} ms/step)")


def to_json(result: ScenarioResult) -> dict[str, Any]:
    return {
        "file": result.file, "name": result.name, "home": result.home, "ok": result.ok,
        "steps": len(result.steps), "failed": len(result.failed), "elapsed_s": round(result.elapsed_s, 3),
        "results": [{"path": s.path, "line": s.line, "kind": s.kind, "clock": from_ms(s.clock_ms).astimezone(
            CHINA_TZ).isoformat(timespec="milliseconds"), "step": s.summary, "ok": s.ok, "actual": s.actual,
            "failures": [{"key": f.key, "expected": f.expected, "actual": f.actual} for f in s.failures],
            "error": s.error, "elapsed_ms": round(s.elapsed_ms, 3)} for s in result.steps],
    }


def write_junit(results: list[ScenarioResult], path: Path, bad_files: list[str] | None = None) -> None:
    """JUnit XML: a testsuite per scenario, a testcase per step (a file that does not parse: an error)."""
    root = ET.Element("testsuites", name="pos scenarios")
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.name, file=r.file, tests=str(len(r.steps)),
                              failures=str(sum(1 for s in r.steps if s.failures and not s.error)),
                              errors=str(sum(1 for s in r.steps if s.error)), time=f"{r.elapsed_s:.3f}")
        for s in r.steps:
            case = ET.SubElement(suite, "testcase", classname=Path(r.file).stem, name=f"{s.path} {s.summary}",
                                 file=r.file, line=str(s.line), time=f"{s.elapsed_ms / 1e3:.4f}")
            if s.error is not None:
                ET.SubElement(case, "error", message=s.error).text = s.error
            elif s.failures:
                text = "\n".join(step_lines(s)[1:])
                ET.SubElement(case, "failure", message=text.strip().splitlines()[0]).text = text
    for problem in bad_files or []:
        suite = ET.SubElement(root, "testsuite", name=problem.split(":", 1)[0], tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", classname="scenario", name="parse")
        ET.SubElement(case, "error", message=problem.splitlines()[0]).text = problem
    ET.indent(root)
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
