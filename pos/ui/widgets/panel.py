"""A panel: one view of a screen that shows one of several (the counter's amount entry, its charge and its result).

Switching panels inside one screen is a display change of widgets built once, where pushing a new screen composes,
styles and lays out a whole screen: the counter goes from Enter to the approved result without building anything.
While a panel shows, a zero-size widget inside it holds the focus, so the panel's own ``BINDINGS`` answer the keys
(a hidden panel's never fire) and moving the focus restyles that one leaf, not the panel's widgets. Its ``KEYS``
fill the screen's key bar and, with ``KEY_HELP``, the F1 help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual.containers import Vertical
from textual.widget import Widget

from pos.ui.widgets.bars import Keys

if TYPE_CHECKING:
    from pos.ui.app import TerminalApp


class PanelKeys(Widget, can_focus=True):
    """Where the focus sits while its panel shows: the key events start here and go up through the panel."""

    DEFAULT_CSS = "PanelKeys { width: 0; height: 0; }"


class Panel(Vertical):
    """One view of a screen, filled (texts in the app's language) before it is displayed."""

    KEYS: ClassVar[Keys] = []
    KEY_HELP: ClassVar[Keys] = []

    def __init__(self, *children: Widget, **kwargs: Any) -> None:
        super().__init__(PanelKeys(), *children, **kwargs)

    def take_keys(self) -> None:
        """Let this panel's bindings answer the keys (call it when the panel is shown)."""
        self.query_one(PanelKeys).focus(scroll_visible=False)

    @property
    def tapp(self) -> TerminalApp:
        return self.app  # type: ignore[return-value]

    def t(self, key: str, **kw: Any) -> str:
        return self.tapp.t(key, **kw)

    @property
    def keys(self) -> Keys:
        """The key bar of this panel (a panel whose keys depend on what it shows overrides this)."""
        return list(self.KEYS)

    def retranslate(self) -> None:
        """Redraw every text in the current language (override)."""
