"""Where a reference's content may come from: an ordered list of endpoints, mirrors first, upstream last.

The configuration is the one the machine's runtimes already read; nothing else
in cas knows where an endpoint came from. For one reference, the first source
that configures its registry gives the whole list:

1. containerd ``hosts.toml``: ``<dir>/<registry>/hosts.toml``, else
   ``<dir>/_default/hosts.toml``, in the hosts directories in order
   (``--hosts-dir`` / ``$CAS_HOSTS_DIR``, default /etc/containerd/certs.d and
   /etc/docker/certs.d);
2. containers ``registries.conf`` (+ ``registries.conf.d``): the ``[[registry]]``
   with the longest matching prefix (``$CAS_REGISTRIES_CONF``, default
   /etc/containers/registries.conf);
3. docker ``daemon.json`` (``$CAS_DOCKER_DAEMON_JSON``, default
   /etc/docker/daemon.json): ``registry-mirrors`` for docker.io, and
   ``insecure-registries`` for any registry and those mirrors;
4. otherwise the registry named in the reference, alone.

``insecure`` (``--insecure``) marks the registry named in the reference insecure
where no file configures it (cases 3 and 4): HTTPS without verification, then
plain HTTP if the server speaks only that (``cas.registry.insecure``).

``blocked = true`` in registries.conf refuses the reference whatever gives its
endpoints, before any request. A default file that does not exist is no
configuration; a file or directory named explicitly must exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cas.errors import Blocked, ConfigError
from cas.reference import Reference
from cas.registry.endpoints import daemon_json, hosts_toml, registries_conf
from cas.registry.endpoints.model import PULL, RESOLVE, TLS, Endpoint, upstream
from cas.settings import current

__all__ = ["PULL", "RESOLVE", "TLS", "Endpoint", "Sources", "upstream"]

DEFAULT_HOSTS_DIRS = ("/etc/containerd/certs.d", "/etc/docker/certs.d")
DEFAULT_REGISTRIES_CONF = "/etc/containers/registries.conf"
DEFAULT_DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass(frozen=True)
class Sources:
    """The configuration files to read; ``endpoints(ref)`` reads them for one reference."""

    hosts_dirs: tuple[Path, ...] = ()
    registries_conf: Path | None = None
    daemon_json: Path | None = None

    @classmethod
    def from_env(cls, hosts_dirs: list[str] | None = None, env: Mapping[str, str] | None = None) -> Sources:
        """``--hosts-dir`` values (they replace $CAS_HOSTS_DIR and the defaults), then the environment
        (by default this process's, with config.toml's values where no variable is set: cas.settings)."""
        env = current().endpoint_env() if env is None else env
        if hosts_dirs:
            dirs = [Path(d) for d in hosts_dirs]
        elif "CAS_HOSTS_DIR" in env:
            dirs = [Path(d) for d in env["CAS_HOSTS_DIR"].split(":") if d]
        else:
            dirs = [Path(d) for d in DEFAULT_HOSTS_DIRS if os.path.isdir(d)]
        for directory in dirs:
            if not directory.is_dir():
                raise ConfigError(
                    f"hosts directory {directory} does not exist", hint="check --hosts-dir or $CAS_HOSTS_DIR"
                )
        return cls(
            hosts_dirs=tuple(dirs),
            registries_conf=_file(env, "CAS_REGISTRIES_CONF", DEFAULT_REGISTRIES_CONF),
            daemon_json=_file(env, "CAS_DOCKER_DAEMON_JSON", DEFAULT_DAEMON_JSON),
        )

    def endpoints(self, ref: Reference, *, insecure: bool = False) -> list[Endpoint]:
        """The endpoints to try for ``ref``, in order; raises Blocked or ConfigError before any request."""
        registries = registries_conf.load(self.registries_conf) if self.registries_conf else []
        found = registries_conf.match(registries, ref.name)
        if found is not None and found[0].blocked:
            raise Blocked(
                f"registry {ref.registry} is blocked for {ref.name} by {found[0].source} (prefix {found[0].prefix!r})",
                hint=f"remove `blocked = true` from that [[registry]] in {found[0].source} to pull from it",
            )
        hosts = hosts_toml.find(list(self.hosts_dirs), ref.registry)
        if hosts is not None:
            return hosts_toml.read(hosts, ref.registry, ref.repository)
        if found is not None:
            return registries_conf.endpoints(found[0], found[1], ref.name, by_digest=ref.digest is not None)
        if self.daemon_json is not None:
            return daemon_json.read(self.daemon_json).endpoints(ref.registry, ref.repository, insecure=insecure)
        return [upstream(ref.registry, ref.repository, insecure=insecure)]

    def own_endpoints(self, ref: Reference, *, insecure: bool = False) -> list[Endpoint]:
        """Where a push or a login goes: ``ref``'s registry as configured (a hosts.toml ``server`` with
        its ``ca``, ``client``, ``skip_verify``; ``insecure`` from any file), mirrors left out: they only
        serve pulls."""
        return [ep for ep in self.endpoints(ref, insecure=insecure) if not ep.mirror]

    def login_endpoints(self, registry: str, *, insecure: bool = False) -> list[Endpoint]:
        """``own_endpoints`` for a login, which names a registry alone. As for ``podman login``, a
        registries.conf entry applies when its prefix is the registry itself or a wildcard matching
        it; one for a repository below it does not. The repository filled in is never sent: a login
        asks only ``/v2/``."""
        return self.own_endpoints(Reference(registry, LOGIN_REPOSITORY), insecure=insecure)


LOGIN_REPOSITORY = "_login"  # stands in for a repository no registries.conf prefix names


def _file(env: Mapping[str, str], name: str, default: str) -> Path | None:
    if name in env:
        if not env[name]:
            return None  # set but empty: read no such file
        path = Path(env[name])
        if not path.is_file():
            raise ConfigError(f"{path} (from ${name}) does not exist", hint=f"unset {name} or point it at a file")
        return path
    return Path(default) if os.path.isfile(default) else None
