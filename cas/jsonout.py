"""The JSON every command prints: one object, a schema version, and one way to write times.

``cas CMD --json`` prints exactly one object on stdout::

    {"schema": 1, "command": "pull", ...the command's own fields...}

``schema`` is bumped only when a field is renamed, removed or changes meaning; new
fields may appear at any time. The field conventions (docs/json.md) are:
snake_case keys; ``ref`` is a canonical reference; ``digest`` is always the
reference's own digest (the index's for a multi-platform tag) and ``manifest`` the
image manifest picked for the platform; byte counts are integers named ``size``
or ``*_bytes``; blob counts ``*_blobs``; instants are RFC 3339 UTC strings named
``*_at`` (``"2026-11-30T01:02:03Z"``); durations are ``seconds`` (a float).

Pure: commands in ``cas`` build their bodies with :func:`timestamp`, the CLI wraps
them with :func:`document`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

SCHEMA = 1


def document(command: str, body: dict[str, Any]) -> dict[str, Any]:
    """The object ``cas COMMAND --json`` prints: the envelope first, then the command's fields."""
    return {"schema": SCHEMA, "command": command, **body}


def timestamp(unix: float | None) -> str | None:
    """RFC 3339 UTC with whole seconds (``2026-11-30T01:02:03Z``); None (unknown) stays None."""
    if unix is None:
        return None
    moment = _dt.datetime.fromtimestamp(int(unix), tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
