"""The Textual terminal UI over the pos domain: base app, shared widgets, one package per screen group."""
