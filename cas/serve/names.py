"""Which upstream a request means: one pure function from (path name, ?ns=, aliases) to a name.

The order: ``?ns=HOST[:PORT]`` (containerd sends it to a
mirror); a first path component given as an alias (``--upstream lab=127.0.0.1:5000``); a
first component that is a host (a dot or a port, or ``localhost``); else docker.io, with
``library/`` for one-part names, so docker's ``registry-mirrors`` works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cas.errors import BadReference
from cas.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, parse
from cas.serve.errcode import ServeError

MAX_NAME = 255  # distribution's limit on a repository name, host included


@dataclass(frozen=True)
class Name:
    """A repository at an upstream: ``registry`` is how the store's records name it."""

    registry: str
    repository: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"

    def ref(self, reference: str) -> str:
        """The canonical reference of a tag or digest in this repository (as cas pull records it)."""
        separator = "@" if ":" in reference else ":"
        return f"{self}{separator}{reference}"


def map_name(path: str, ns: str | None = None, aliases: Mapping[str, str] | None = None) -> Name:
    """The upstream repository a request's name means; ServeError NAME_INVALID when it cannot be one."""
    if not path or len(path) > MAX_NAME:
        raise ServeError("NAME_INVALID", f"invalid repository name (1 to {MAX_NAME} characters)", {"name": path[:80]})
    first, _, rest = path.partition("/")
    if ns:
        registry, repository = ns, path
    elif aliases and first in aliases and rest:
        registry, repository = aliases[first], rest
    elif rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, path
    return checked(registry, repository, path)


def checked(registry: str, repository: str, path: str = "") -> Name:
    """``registry/repository`` validated by cas's own reference grammar (no ``..``, no empty part)."""
    registry = DOCKER_HUB if registry.lower() in DOCKER_HUB_ALIASES else registry
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    try:
        parsed = parse(f"{registry}/{repository}")
    except BadReference as exc:
        raise ServeError("NAME_INVALID", exc.message, {"name": (path or repository)[:80]}) from None
    if (parsed.registry, parsed.repository) != (registry, repository):
        message = f"{registry!r} is not a registry host (give it a dot, a port, or name it localhost)"
        raise ServeError("NAME_INVALID", message, {"name": (path or repository)[:80]})
    return Name(registry, repository)


def parse_upstreams(pairs: list[str]) -> dict[str, str]:
    """``ALIAS=HOST[:PORT]`` values (``--upstream``, or ``upstreams`` in config.toml) as a dict;
    ValueError saying which one is wrong."""
    aliases: dict[str, str] = {}
    for pair in pairs:
        alias, sep, host = pair.partition("=")
        if not sep or not alias or "/" in alias or not host:
            raise ValueError(f"{pair!r}: expected ALIAS=HOST[:PORT], e.g. lab=127.0.0.1:5000")
        try:
            checked(host, "probe")
        except ServeError as exc:
            raise ValueError(f"{pair!r}: {exc.message}") from None
        aliases[alias] = host
    return aliases
