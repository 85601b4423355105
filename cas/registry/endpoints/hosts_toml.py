"""containerd's hosts.toml: ``<dir>/<host[:port]>/hosts.toml``, else ``<dir>/_default/hosts.toml``.

The file lists ``[host."URL"]`` entries, tried in file order, then ``server``
(the upstream; ``https://<host>`` when absent). Each entry may set
``capabilities`` (pull, resolve, push; all three by default), ``skip_verify``,
``ca`` (a path or a list), ``client`` (a path, a [cert, key] pair, or a list
of either), ``header`` (name = value or [values]) and ``override_path`` (the
URL's path is the API root instead of ``<path>/v2``). The same keys at the top
level apply to ``server``. Relative paths are relative to the file's directory,
as containerd reads them.

Like containerd, every endpoint whose host is not the reference's registry (a
mirror, or a ``server`` elsewhere) gets ``?ns=<registry>`` on its manifest and
blob requests (``model.proxy_namespace``), override_path or not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cas.registry.endpoints.model import (
    CAPABILITIES,
    TLS,
    Endpoint,
    api_host,
    bad,
    check_keys,
    endpoint_url,
    flag,
    load_toml,
    proxy_namespace,
)

DEFAULT_DIR = "_default"
HOST_KEYS = frozenset({"capabilities", "skip_verify", "ca", "client", "header", "override_path"})


def find(dirs: list[Path], registry: str) -> Path | None:
    """The hosts.toml that configures ``registry``: its own directory first, then ``_default``, per dir in order."""
    for name in (registry, DEFAULT_DIR):
        for directory in dirs:
            candidate = directory / name / "hosts.toml"
            if candidate.is_file():
                return candidate
    return None


def read(path: Path, registry: str, repository: str) -> list[Endpoint]:
    """The endpoints of one hosts.toml, mirrors first, the upstream (``server``) last."""
    doc = load_toml(path)
    check_keys(path, doc, HOST_KEYS | {"server", "host"}, "hosts.toml")
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict) or not all(isinstance(t, dict) for t in hosts.values()):
        raise bad(path, "host", '"host" must be tables: [host."https://mirror.example"]')
    endpoints = [
        _endpoint(path, f'[host."{url}"]', url, table, registry, repository, mirror=True)
        for url, table in hosts.items()
    ]
    server = doc.get("server", api_host(registry))
    if not isinstance(server, str):
        raise bad(path, "server", '"server" must be a URL string, e.g. "https://registry-1.docker.io"')
    top = {key: value for key, value in doc.items() if key in HOST_KEYS}
    endpoints.append(_endpoint(path, "server", server, top, registry, repository, mirror=False))
    return endpoints


def _endpoint(
    path: Path, where: str, url: str, table: dict, registry: str, repository: str, *, mirror: bool
) -> Endpoint:
    check_keys(path, table, HOST_KEYS, where)
    try:
        full = endpoint_url(url)
    except ValueError as exc:
        raise bad(path, url, f"{where}: {exc}", hint='use "https://host[:port]" or "http://host[:port]"') from None
    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise bad(path, "override_path", f"{where}: override_path must be true or false")
    endpoint = Endpoint(
        url=full,
        api=full if override else full + "/v2",
        repository=repository,
        capabilities=_capabilities(path, where, table.get("capabilities")),
        mirror=mirror,
        tls=TLS(
            skip_verify=flag(path, table, "skip_verify", where),
            ca=tuple(_abs(path, p) for p in _paths(path, where, table.get("ca"), "ca")),
            client=_clients(path, where, table.get("client")),
        ),
        headers=_headers(path, where, table.get("header")),
        source=str(path),
    )
    return replace(endpoint, namespace=proxy_namespace(endpoint.host, registry))


def _capabilities(path: Path, where: str, value: object) -> frozenset[str]:
    if value is None:
        return CAPABILITIES
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(path, "capabilities", f'{where}: capabilities must be a list such as ["pull", "resolve"]')
    unknown = sorted(set(value) - CAPABILITIES)
    if unknown:
        raise bad(path, "capabilities", f"{where}: unknown capability {unknown[0]!r} (pull, resolve, push)")
    return frozenset(value)


def _paths(path: Path, where: str, value: object, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad(path, key, f"{where}: {key} must be a path or a list of paths")


def _clients(path: Path, where: str, value: object) -> tuple[tuple[str, str | None], ...]:
    """``"c.pem"``, ``["c.cert", "c.key"]`` or ``[["c.cert", "c.key"], "d.pem"]``."""
    if value is None:
        return ()
    if isinstance(value, str):
        return ((_abs(path, value), None),)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        value = [value]
    pairs: list[tuple[str, str | None]] = []
    for item in value if isinstance(value, list) else [None]:
        if isinstance(item, str):
            pairs.append((_abs(path, item), None))
        elif isinstance(item, list) and 1 <= len(item) <= 2 and all(isinstance(v, str) for v in item):
            key = item[1] if len(item) == 2 and item[1] else None
            pairs.append((_abs(path, item[0]), _abs(path, key) if key else None))
        else:
            raise bad(path, "client", f'{where}: client must be a path, ["cert", "key"], or a list of those')
    return tuple(pairs)


def _headers(path: Path, where: str, value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise bad(path, "header", f"{where}: header must be a table of name = value")
    out = []
    for name, values in value.items():
        for item in values if isinstance(values, list) else [values]:
            if not isinstance(item, str):
                raise bad(path, name, f"{where}: header {name!r} must be a string or a list of strings")
            out.append((name, item))
    return tuple(out)


def _abs(path: Path, file: str) -> str:
    return str(path.parent / file) if not Path(file).is_absolute() else file
