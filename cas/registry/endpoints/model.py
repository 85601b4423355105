"""The Endpoint record every configuration format is read into, and helpers the readers share.

An endpoint is one place that serves the Distribution API for a reference: a
mirror, or the upstream registry itself. It carries everything the client needs
to talk to it (URL, TLS settings, extra headers) and the repository name to ask
for there, which registries.conf may rewrite. No I/O here but reading a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cas.errors import ConfigError
from cas.reference import DOCKER_HUB, DOCKER_HUB_API
from cas.registry.wire import is_loopback

PULL = "pull"
RESOLVE = "resolve"
PUSH = "push"
CAPABILITIES = frozenset({PULL, RESOLVE, PUSH})


@dataclass(frozen=True)
class TLS:
    """TLS settings of one endpoint, on top of the trust docker has (system store, certs.d)."""

    skip_verify: bool = False
    ca: tuple[str, ...] = ()  # extra CA files (PEM)
    client: tuple[tuple[str, str | None], ...] = ()  # (certificate, key or None when the cert file holds both)


@dataclass(frozen=True)
class Endpoint:
    """One place to fetch a reference's manifests and blobs from.

    ``url`` is shown to users (scheme, host, optional path); ``api`` is the URL
    that ``/<repository>/manifests/<ref>`` is appended to: ``url + "/v2"``, or
    ``url`` itself when the configuration says ``override_path``. ``namespace``:
    the registry to name in ``?ns=`` on its manifest and blob requests (``resource``),
    "" for none; only containerd's hosts.toml sets it (``proxy_namespace``).
    """

    url: str
    api: str
    repository: str
    capabilities: frozenset[str] = CAPABILITIES
    mirror: bool = False
    tls: TLS = field(default_factory=TLS)
    headers: tuple[tuple[str, str], ...] = ()
    source: str = ""  # the file it was configured in; "" for the registry named in the reference
    insecure: bool = False  # marked insecure by the user: see ``insecure_endpoint``
    namespace: str = ""  # sent as ?ns= on manifest and blob requests; see ``proxy_namespace``

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def host(self) -> str:
        """host[:port]: whose credentials and certs.d apply to this endpoint."""
        return host_of(self.url)

    def resource(self, repository: str, kind: str, reference: object) -> str:
        """The URL of ``<repository>/<kind>/<reference>`` (kind: manifests, blobs) here, with ``ns`` if it has one."""
        url = f"{self.api}/{repository}/{kind}/{reference}"
        return with_query(url, "ns", self.namespace) if self.namespace else url

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def named(self, registry: str) -> str:
        """How messages name it: ``mirror URL``, or ``registry HOST`` (the reference's own name by default)."""
        return f"mirror {self.url}" if self.mirror else f"registry {self.host if self.source else registry}"


def api_host(host: str) -> str:
    """docker.io is served at registry-1.docker.io, wherever it is named."""
    return DOCKER_HUB_API if host == DOCKER_HUB else host


def host_of(url: str) -> str:
    """The host[:port] of ``scheme://host[:port][/path]``."""
    return url.split("://", 1)[1].split("/", 1)[0]


def proxy_namespace(host: str, registry: str) -> str:
    """``registry`` when an endpoint at ``host`` serves it as a proxy, else "": containerd's rule.

    containerd adds ``?ns=<the reference's registry>`` to manifest and blob requests
    sent to any host that is not that registry (so a pull-through cache serving
    several upstreams knows which one is meant); registry-1.docker.io is docker.io
    itself, not a proxy of it.
    """
    return "" if host in (registry, api_host(registry)) else registry


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` appended to its query, the query it had kept."""
    joiner = "&" if "?" in url and not url.endswith(("?", "&")) else ("" if "?" in url else "?")
    return f"{url}{joiner}{quote(name, safe='')}={quote(value, safe=':')}"


def endpoint_url(text: str, *, insecure: bool = False) -> str:
    """``scheme://host[:port][/path]`` without a trailing slash.

    Without a scheme: https, or plain http for a loopback host (as cas has always
    reached loopback registries) unless it is marked ``insecure``: an insecure
    endpoint tries HTTPS first (``cas.registry.insecure``), as docker does.
    """
    text = text.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    host = rest.split("/", 1)[0]
    if not host or (scheme and scheme.lower() not in ("http", "https")):
        raise ValueError(f"{text!r} is not an http or https URL")
    if not scheme:
        scheme = "http" if is_loopback(host) and not insecure else "https"
    return f"{scheme.lower()}://{api_host(host)}{rest[len(host) :]}"


def upstream(host: str, repository: str, *, insecure: bool = False, source: str = "") -> Endpoint:
    """The registry named in a reference, as an endpoint that can do everything."""
    return insecure_endpoint(endpoint_url(host, insecure=insecure), repository, insecure, source=source)


def insecure_endpoint(
    url: str,
    repository: str,
    insecure: bool,
    *,
    capabilities: frozenset[str] = CAPABILITIES,
    mirror: bool = False,
    source: str = "",
) -> Endpoint:
    """An endpoint at ``url`` (no trailing /v2), with what "insecure" means to docker, podman,
    skopeo and crane: an https URL is reached without verifying the certificate, and falls back to
    plain HTTP when the server answers the TLS handshake in plain HTTP (``cas.registry.insecure``);
    an http URL stays plain HTTP. Not insecure: the URL as it is, verified."""
    tls = TLS(skip_verify=True) if insecure and url.startswith("https://") else TLS()
    return Endpoint(
        url=url,
        api=url + "/v2",
        repository=repository,
        capabilities=capabilities,
        mirror=mirror,
        tls=tls,
        source=source,
        insecure=insecure,
    )


def load_toml(path: Path) -> dict:
    """A TOML file as a dict, or a one-line ConfigError naming the file and line."""
    import tomllib  # only when a configuration file exists

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)  # "Expected ... (at line N, column M)"
        where = re.search(r"\(at line (\d+), column (\d+)\)$", text)
        if where:
            text = f"{where[1]}: {text[: where.start()].strip()} (column {where[2]})"
        elif text.endswith("(at end of document)"):
            lines = len(path.read_bytes().splitlines())
            text = f"{lines}: {text.removesuffix('(at end of document)').strip()} at the end of the file"
        else:
            text = f" {text}"
        raise ConfigError(f"{path}:{text}", hint="fix the TOML syntax there (https://toml.io)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def flag(path: Path, table: dict, key: str, where: str) -> bool:
    """A boolean setting, false when absent."""
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise bad(path, key, f"{where}: {key} must be true or false")
    return value


def check_keys(path: Path, table: dict, keys: frozenset[str], where: str) -> None:
    """Refuse a key we do not know: a typo must not silently turn a setting off."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise bad(path, unknown[0], f"unknown key {unknown[0]!r} in {where}", hint=f"keys: {', '.join(sorted(keys))}")


def bad(path: Path, key: str, problem: str, hint: str | None = None) -> ConfigError:
    """A ConfigError for a well-formed file with a wrong value: names the file and the key's line."""
    return ConfigError(f"{path}{line_of(path, key)}: {problem}", hint=hint)


def line_of(path: Path, key: str) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    needle = key.strip('"')
    for number, line in enumerate(lines, 1):
        if needle in line and not line.lstrip().startswith("#"):
            return f":{number}"
    return ""
