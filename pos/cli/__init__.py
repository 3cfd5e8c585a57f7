"""The `pos` command line: parsing, commands, exit codes and JSON output."""
