"""ecny-pos: the terminal side (payment session, risk checks, ledger, CLI) and its Textual UI in ``pos.ui``."""

__version__ = "0.1.0"
