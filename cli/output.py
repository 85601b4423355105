"""Rendering shared by every command: errors, notices, JSON, sizes, tables.

Rich is imported only when a progress bar is drawn, never for plain lines.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from cas.sizes import format_size as human_size  # noqa: F401  (one IEC formatter for every command)


def error(message: str, hint: str | None = None) -> None:
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    print(f"{red}error:{reset} {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def notice(message: str) -> None:
    print(message, file=sys.stderr)


def emit_json(command: str, body: dict[str, Any]) -> None:
    """Print ``body`` as ``command``'s one JSON object, with the schema envelope (cas.jsonout)."""
    from cas.jsonout import document

    json.dump(document(command, body), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


PARTIAL = "cas.partial"  # the click context's meta key for what a command did before it failed


def emit_failure(command: str, message: str, hint: str | None, exit_code: int, partial: dict[str, Any]) -> None:
    """`--json` on failure: still one object, what the command did so far (``partial``) and ``error``.

    The error is said on stderr as well, as without --json: a script reading stdout gets the
    object, a person watching gets the line.
    """
    emit_json(command, {**partial, "error": {"message": message, "hint": hint, "exit_code": exit_code}})


def enable_logging() -> None:
    """`-v`: every logger under "cas" (HTTP requests, lock waits, mirror fallbacks...) to stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("cas")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def want_progress(quiet: bool, as_json: bool) -> bool:
    """Bars only on a terminal, and not under `-v`: log lines would tear through them."""
    import logging

    verbose = logging.getLogger("cas").isEnabledFor(logging.DEBUG)
    return not quiet and not as_json and not verbose and sys.stderr.isatty()


def short_digest(digest: str) -> str:
    """A digest as tables and summaries show it: ``sha256:`` and 12 hex digits, like docker's IDs."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}"


def ago(then: float, now: float) -> str:
    seconds = max(0, int(now - then))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def ago_text(stamp: str | None, now: float) -> str:
    """``ago`` for an RFC 3339 timestamp from a JSON body; ``-`` when unknown."""
    if not stamp:
        return "-"
    import datetime

    return ago(datetime.datetime.fromisoformat(stamp).timestamp(), now)


def table(rows: list[tuple[str, ...]]) -> None:
    """Plain aligned columns: readable, greppable, and no rich import for a list."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
