"""Rendering shared by every command: errors, notices, JSON, sizes.

Rich is imported only when a table or progress bar is drawn, never for plain lines.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def error(message: str, hint: str | None = None) -> None:
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    print(f"{red}error:{reset} {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def notice(message: str) -> None:
    print(message, file=sys.stderr)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def want_progress(quiet: bool, as_json: bool) -> bool:
    return not quiet and not as_json and sys.stderr.isatty()


def ago(then: float, now: float) -> str:
    seconds = max(0, int(now - then))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def table(rows: list[tuple[str, ...]]) -> None:
    """Plain aligned columns: readable, greppable, and no rich import for a list."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
