"""The tester panel's scenario runner (S on the panel): pick a shipped scenario or type a file's path, run it, read
its transcript line by line and the pass/fail summary.

The run is ``pos scenario run`` in a child process, driven from a worker thread: a scenario sets the process's
clock to its virtual one and points the operator URL at its own operator, which must not reach this terminal's
charges. A file without ``via: ui`` steps runs in a temporary home; a file with them runs in this terminal's home,
so its ``via: ui`` steps tap through this terminal's socket and broker and the screen shows them (a counter: the
clerk opens each charge, Esc closes the panel and the run goes on; S on the panel shows it again).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, RichLog, Static

from pos.ui.app import TerminalScreen
from pos.ui.widgets import KeyBar

SHIPPED_DIR = Path(__file__).resolve().parents[3] / "scenarios"  # the project's scenarios/ folder
VIA_UI = re.compile(r"via:\s*['\"]?ui\b")
SCREEN_NAME = "tester-scenario"


def shipped_scenarios() -> list[tuple[str, Path]]:
    """(name, file) of each shipped scenario (the file's stem when its name cannot be read)."""
    out = []
    for path in sorted(SHIPPED_DIR.glob("*.yaml")) if SHIPPED_DIR.is_dir() else []:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            name = str(data["name"]) if isinstance(data, dict) and "name" in data else path.stem
        except (OSError, yaml.YAMLError):
            name = path.stem
        out.append((name, path))
    return out


def command(path: Path, home: Path | None) -> list[str]:
    """The child process that runs ``path`` (in ``home``, else in a temporary home)."""
    where = ["--home", str(home)] if home is not None else []
    return [sys.executable, "-m", "pos.cli.main", *where, "scenario", "run", str(path)]


class ScenarioScreen(TerminalScreen):
    """A path prompt over the shipped scenarios; Enter runs; the transcript and summary below."""

    KEYS: ClassVar = [("Enter", "key.run"), ("Esc", "key.close"), ("F3", "key.language")]
    BINDINGS: ClassVar = [Binding("escape", "close", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.shipped = shipped_scenarios()
        self.lines: list[str] = []  # the transcript so far (kept while the panel is closed)
        self.summary = ""
        self.passed: bool | None = None
        self.running = False
        self.where: tuple[str, str] = ("", "")

    def compose(self) -> ComposeResult:
        yield Static(id="scenario-title", classes="label")
        yield Static(id="scenario-prompt")
        yield Input(id="scenario-path")
        table: DataTable[Any] = DataTable(id="scenario-list", cursor_type="row", show_header=False)
        yield table
        yield RichLog(id="scenario-log", wrap=False, max_lines=5000)
        yield Static(id="scenario-summary")
        yield KeyBar(self.KEYS)

    def ready(self) -> None:
        table = self.query_one("#scenario-list", DataTable)
        table.add_columns("name", "file")
        for name, path in self.shipped:
            table.add_row(name, path.name)
        self.query_one("#scenario-path", Input).focus()
        self.retranslate()
        self._redraw()

    def on_screen_resume(self) -> None:
        if self.is_ready:
            self._redraw()

    def retranslate(self) -> None:
        super().retranslate()
        self.query_one("#scenario-title", Static).update(self.t("scenario.title"))
        self.query_one("#scenario-prompt", Static).update(self.t("scenario.path"))
        self._draw_summary()

    def _draw_summary(self) -> None:
        text = Text()
        if self.running:
            text.append(self.t("scenario.running", file=self.where[0], where=self.t(self.where[1])))
        elif self.passed is not None:
            key = "scenario.passed" if self.passed else "scenario.failed"
            text.append(self.t(key, summary=self.summary), style="bold green" if self.passed else "bold red")
        self.query_one("#scenario-summary", Static).update(text)

    def _redraw(self) -> None:
        log = self.query_one("#scenario-log", RichLog)
        log.clear()
        for line in self.lines:
            log.write(line)
        self._draw_summary()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        path = self.shipped[event.cursor_row][1]
        self.query_one("#scenario-path", Input).value = str(path)
        self.start(path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.start(Path(event.value.strip()).expanduser())
        else:
            self.query_one("#scenario-list", DataTable).focus()

    def start(self, path: Path) -> None:
        """Run ``path`` in a worker thread (one run at a time)."""
        if self.running:
            self.notify(self.t("scenario.busy"), severity="warning")
            return
        try:
            here = bool(VIA_UI.search(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            self.notify(self.t("scenario.bad_file", error=str(exc)), severity="error")
            return
        self.lines, self.summary, self.passed, self.running = [], "", None, True
        self.where = (path.name, "scenario.this_home" if here else "scenario.temp_home")
        self._redraw()
        self._run(command(path, self.tapp.runtime.home.root if here else None))

    @work(thread=True, group="scenario", exit_on_error=False)
    def _run(self, argv: list[str]) -> None:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                encoding="utf-8", errors="replace")
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith(("PASS ", "FAIL ")):
                self.summary = line.split(" ", 1)[1]
            self.lines.append(line)
            self.app.call_from_thread(self._show, line)
        code = proc.wait()
        self.app.call_from_thread(self._finished, code)

    def _show(self, line: str) -> None:
        if self.is_current:
            self.query_one("#scenario-log", RichLog).write(line)

    def _finished(self, code: int) -> None:
        self.running = False
        self.passed = code == 0
        if not self.summary:
            self.summary = self.lines[-1] if self.lines else f"exit {code}"
        if self.is_current:
            self._draw_summary()

    def action_close(self) -> None:
        self.app.pop_screen()
