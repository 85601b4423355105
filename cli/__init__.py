"""The `cas` command line: one module per command, errors mapped to one line and an exit code."""
