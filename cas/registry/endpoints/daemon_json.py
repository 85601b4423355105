"""docker's daemon.json ``registry-mirrors``: mirrors of Docker Hub, tried before it, as docker does.

They apply to ``docker.io`` references only (docker has no mirrors for other
registries) and may resolve tags as well as serve content. Other daemon.json
keys are not read.
"""

from __future__ import annotations

import json
from pathlib import Path

from cas.errors import ConfigError
from cas.registry.endpoints.model import PULL, RESOLVE, Endpoint, endpoint_url, line_of

KEY = "registry-mirrors"


def read(path: Path) -> list[str]:
    """The mirror URLs in ``path``; a one-line ConfigError naming the file and line when it is malformed."""
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    mirrors = doc.get(KEY, []) if isinstance(doc, dict) else None
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise ConfigError(
            f"{path}{line_of(path, KEY)}: {KEY!r} must be a list of URLs",
            hint='e.g. {"registry-mirrors": ["https://mirror.example"]}',
        )
    return mirrors


def endpoints(path: Path, mirrors: list[str], repository: str) -> list[Endpoint]:
    out = []
    for text in mirrors:
        try:
            url = endpoint_url(text)
        except ValueError as exc:
            raise ConfigError(f"{path}{line_of(path, KEY)}: {KEY}: {exc}") from None
        out.append(
            Endpoint(
                url=url,
                api=url + "/v2",
                repository=repository,
                capabilities=frozenset({PULL, RESOLVE}),
                mirror=True,
                source=str(path),
            )
        )
    return out
