"""docker's daemon.json: ``registry-mirrors`` and ``insecure-registries``, read as docker reads them.

``registry-mirrors`` are mirrors of Docker Hub, tried before it: they apply to
``docker.io`` references only (docker has no mirrors for other registries) and
may resolve tags as well as serve content.

``insecure-registries`` marks registries insecure, any registry and the mirrors
above: an entry is ``host[:port]`` (matched exactly, as docker matches it) or a
CIDR range such as ``10.0.0.0/8``. A range matches a registry named by an IP
address. A host *name* is not resolved to match a range, unlike docker: the
answer would come from DNS, whoever controls it could turn TLS verification
off for any registry by pointing its name into the range, and a lookup would
cost every pull a round trip (or, through a proxy, fail). List such a registry
by name. Other daemon.json keys are not read.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cas.errors import ConfigError
from cas.reference import DOCKER_HUB
from cas.registry.endpoints.model import (
    PULL,
    RESOLVE,
    Endpoint,
    endpoint_url,
    host_of,
    insecure_endpoint,
    line_of,
    upstream,
)

KEY = "registry-mirrors"
INSECURE = "insecure-registries"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DaemonJson:
    path: Path
    mirrors: tuple[str, ...] = ()
    insecure_hosts: frozenset[str] = frozenset()  # host[:port], lowercase
    insecure_ranges: tuple[Network, ...] = ()

    def insecure(self, host: str) -> bool:
        """Whether ``host`` (host[:port]) is listed in ``insecure-registries``, by name or by range."""
        host = host.lower()
        if host in self.insecure_hosts:
            return True
        address = _address(host)
        return address is not None and any(address in network for network in self.insecure_ranges)

    def endpoints(self, registry: str, repository: str, *, insecure: bool = False) -> list[Endpoint]:
        """The mirrors (docker.io only), then ``registry`` itself; ``insecure``: --insecure was given."""
        out = []
        for text in self.mirrors if registry == DOCKER_HUB else ():
            url = self._url(text)
            out.append(
                insecure_endpoint(
                    url,
                    repository,
                    self.insecure(host_of(url)),
                    capabilities=frozenset({PULL, RESOLVE}),
                    mirror=True,
                    source=str(self.path),
                )
            )
        if self.insecure(registry):
            return [*out, upstream(registry, repository, insecure=True, source=str(self.path))]
        return [*out, upstream(registry, repository, insecure=insecure)]

    def _url(self, text: str) -> str:
        try:
            return endpoint_url(text)
        except ValueError as exc:
            raise ConfigError(f"{self.path}{line_of(self.path, KEY)}: {KEY}: {exc}") from None


def read(path: Path) -> DaemonJson:
    """The keys cas reads from ``path``; a one-line ConfigError naming the file and line when it is malformed."""
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1: not a JSON object", hint='e.g. {"registry-mirrors": ["https://mirror.example"]}')
    mirrors = _strings(path, doc, KEY, 'e.g. {"registry-mirrors": ["https://mirror.example"]}')
    hosts, ranges = set(), []
    for entry in _strings(path, doc, INSECURE, 'e.g. {"insecure-registries": ["registry.lan:5000", "10.0.0.0/8"]}'):
        network = _insecure_entry(path, entry)
        if network is None:
            hosts.add(entry.strip().lower())
        else:
            ranges.append(network)
    return DaemonJson(path, tuple(mirrors), frozenset(hosts), tuple(ranges))


def _strings(path: Path, doc: dict, key: str, example: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}{line_of(path, key)}: {key!r} must be a list of strings", hint=example)
    return value


def _insecure_entry(path: Path, entry: str) -> Network | None:
    """A CIDR range, or None for a ``host[:port]``; a ConfigError naming the line for anything else."""
    text = entry.strip()
    where = f"{path}{line_of(path, entry) or line_of(path, INSECURE)}: {INSECURE}"
    hint = 'write host[:port] or a CIDR range, e.g. "registry.lan:5000" or "10.0.0.0/8"'
    if "://" in text:
        raise ConfigError(f"{where}: {entry!r} must not contain a scheme", hint=hint)
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=False)  # docker (net.ParseCIDR) accepts host bits too
        except ValueError:
            raise ConfigError(f"{where}: {entry!r} is not a CIDR range", hint=hint) from None
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    port = text.rsplit(":", 1)[1] if text.count(":") == 1 else ""
    if not host or any(c.isspace() for c in text) or (port and not port.isdigit()):
        raise ConfigError(f"{where}: {entry!r} is not host[:port] or a CIDR range", hint=hint)
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a registry is named by (``10.1.2.3:5000``, ``[fd00::1]:5000``), or None for a name."""
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
