"""The Textual terminal UI: a thin layer over the pos domain (clerk counter, ticket gate, tester panel)."""
