"""containers' registries.conf (version 2) and its ``registries.conf.d/*.conf`` drop-ins.

Read: ``[[registry]]`` ``prefix`` / ``location`` / ``insecure`` / ``blocked`` /
``mirror-by-digest-only`` and ``[[registry.mirror]]`` ``location`` / ``insecure``
/ ``pull-from-mirror`` (all, digest-only, tag-only). Other keys (aliases,
search registries, short-name mode) concern short names, which cas does not
resolve, and are ignored.

``insecure = true`` means what it means to podman: "allows unencrypted HTTP as
well as TLS connections with untrusted certificates": HTTPS without verifying
the certificate, plain HTTP when the server speaks only that (on loopback too).

Matching is podman's: the ``[[registry]]`` whose prefix is the longest match of
the reference's name (``docker.io/library/alpine``) on a path boundary wins;
``*.example.com`` matches any host under example.com. The matched prefix is
replaced by each mirror's location, and by the registry's own, so a location
may add or change a namespace (``mirror:5000/hub``).

One difference from podman, on purpose: a ``digest-only`` mirror serves content
(manifests by digest, blobs) for tag pulls too; only tag resolution stays at the
upstream. Digests make any mirror safe for content, never for tags.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from cas.registry.endpoints.model import (
    PULL,
    RESOLVE,
    Endpoint,
    bad,
    check_keys,
    endpoint_url,
    flag,
    insecure_endpoint,
    load_toml,
)

MODES = ("all", "digest-only", "tag-only")
_REGISTRY_KEYS = frozenset({"prefix", "location", "insecure", "blocked", "mirror-by-digest-only", "mirror"})
_MIRROR_KEYS = frozenset({"location", "insecure", "pull-from-mirror"})


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class Registry:
    prefix: str
    location: str
    source: Path
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


def load(path: Path) -> list[Registry]:
    """The ``[[registry]]`` tables of ``path`` and of ``<path>.d/*.conf`` (sorted); a later
    file's entry replaces an earlier one with the same prefix, as podman merges them."""
    files = [path]
    drop_ins = path.parent / f"{path.name}.d"
    if drop_ins.is_dir():
        files += sorted(p for p in drop_ins.iterdir() if p.suffix == ".conf" and p.is_file())
    merged: dict[str, Registry] = {}
    for file in files:
        for registry in parse(file):
            merged.pop(registry.prefix, None)
            merged[registry.prefix] = registry
    return list(merged.values())


def parse(path: Path) -> list[Registry]:
    """The tables of one file, parsed once per version of it: `cas pull -f` resolves many
    references in one process, and the TOML parse was a sixth of a warm pull's time."""
    try:
        st = path.stat()
    except OSError:
        return list(_parse(path))  # says what is wrong with it
    return list(_parse_version(path, st.st_ino, st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _parse_version(path: Path, ino: int, size: int, mtime_ns: int) -> tuple[Registry, ...]:
    return _parse(path)


def _parse(path: Path) -> tuple[Registry, ...]:
    doc = load_toml(path)
    if "registries" in doc:
        raise bad(
            path,
            "[registries",
            "registries.conf version 1 ([registries.search], [registries.block]) is not supported",
            hint="use version 2 [[registry]] tables (man containers-registries.conf)",
        )
    tables = doc.get("registry", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise bad(path, "registry", "registry entries must be [[registry]] tables")
    return tuple(_registry(path, table) for table in tables)


def _registry(path: Path, table: dict) -> Registry:
    check_keys(path, table, _REGISTRY_KEYS, "[[registry]]")
    location = _str(path, table, "location", "")
    prefix = _str(path, table, "prefix", "") or location
    if not prefix:
        raise bad(path, "[[registry]]", "a [[registry]] needs a location or a prefix")
    if prefix.startswith("*.") and location:
        raise bad(path, prefix, f"prefix {prefix!r} has a wildcard: it must not set a location")
    if prefix.startswith("*") and not prefix.startswith("*."):
        raise bad(path, prefix, f"prefix {prefix!r}: a wildcard must start the host, as in *.example.com")
    mirrors = table.get("mirror", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, dict) for m in mirrors):
        raise bad(path, "mirror", "mirrors must be [[registry.mirror]] tables")
    where = f"[[registry]] {prefix}"
    return Registry(
        prefix=prefix,
        location=location,
        source=path,
        insecure=flag(path, table, "insecure", where),
        blocked=flag(path, table, "blocked", where),
        mirror_by_digest_only=flag(path, table, "mirror-by-digest-only", where),
        mirrors=tuple(_mirror(path, m) for m in mirrors),
    )


def _mirror(path: Path, table: dict) -> Mirror:
    check_keys(path, table, _MIRROR_KEYS, "[[registry.mirror]]")
    location = _str(path, table, "location", "")
    if not location:
        raise bad(path, "[[registry.mirror]]", "a [[registry.mirror]] needs a location")
    mode = _str(path, table, "pull-from-mirror", "all")
    if mode not in MODES:
        raise bad(path, "pull-from-mirror", f"pull-from-mirror = {mode!r}: expected one of {', '.join(MODES)}")
    return Mirror(location, flag(path, table, "insecure", "[[registry.mirror]]"), mode)


def match(registries: list[Registry], name: str) -> tuple[Registry, str] | None:
    """The registry entry for ``name`` (``host/repository``) and the part of ``name`` its prefix matched."""
    best: tuple[Registry, str] | None = None
    host = name.split("/", 1)[0]
    for registry in registries:
        prefix = registry.prefix
        if prefix.startswith("*."):
            matched = host if host.endswith(prefix[1:]) else None
        else:
            matched = prefix if name == prefix or name.startswith(prefix + "/") else None
        if matched is not None and (best is None or len(registry.prefix) > len(best[0].prefix)):
            best = (registry, matched)
    return best


def endpoints(registry: Registry, matched: str, name: str, *, by_digest: bool) -> list[Endpoint]:
    """Mirrors in order, then the registry's own location, each with the matched prefix rewritten."""
    rest = name[len(matched) :]
    out = []
    for mirror in registry.mirrors:
        mode = "digest-only" if registry.mirror_by_digest_only else mirror.pull_from_mirror
        if mode == "tag-only" and by_digest:
            continue
        capabilities = frozenset({PULL} if mode == "digest-only" else {PULL, RESOLVE})
        out.append(_endpoint(registry, mirror.location + rest, mirror.insecure, capabilities, mirror=True))
    location = registry.location or matched
    out.append(_endpoint(registry, location + rest, registry.insecure, frozenset({PULL, RESOLVE}), mirror=False))
    return out


def _endpoint(registry: Registry, name: str, insecure: bool, capabilities: frozenset[str], *, mirror: bool) -> Endpoint:
    host, _, repository = name.partition("/")
    if not repository:
        raise bad(registry.source, host, f"location {host!r} leaves no repository name for {registry.prefix!r}")
    try:
        url = endpoint_url(host, insecure=insecure)
    except ValueError as exc:
        raise bad(registry.source, host, str(exc)) from None
    return insecure_endpoint(
        url, repository, insecure, capabilities=capabilities, mirror=mirror, source=str(registry.source)
    )


def _str(path: Path, table: dict, key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise bad(path, key, f"{key} must be a string")
    return value
