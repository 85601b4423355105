"""``Squid``: Debian's squid as a real forward proxy on 127.0.0.1, counting what it forwarded.

Why: proxy support is only believable when a real proxy carried the requests (plain GETs with
absolute URIs for http, CONNECT tunnels for https) and said so in its own access log.

Its ``hosts_file`` maps test-only names (``registry.cas.test``) to 127.0.0.1, so a client can
name a registry that is not loopback to it (clients never proxy loopback, like docker and Go)
while every byte still stays on this machine. Squid drops root for the ``proxy`` user, which
cannot enter pytest's private temporary directories, so squid works in a directory of its own
under /tmp (mode 0777), removed by ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .tools import GiveUp, free_port, require, spawn, terminate, wait_until

if TYPE_CHECKING:
    from .images import Image
    from .registry import Registry


@dataclass(frozen=True)
class ProxiedRequest:
    method: str  # GET, HEAD, CONNECT...
    url: str  # absolute URL, or host:port for CONNECT
    status: int


class Squid:
    def __init__(self, hosts: dict[str, str]) -> None:
        """``hosts``: name -> IP address, this proxy's own name resolution."""
        self.binary = require("squid", "squid")
        self.workdir = Path(tempfile.mkdtemp(prefix="cas-test-squid-"))
        self.hosts = hosts
        self.port: int | None = None
        self._proc = None
        self._seen = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Squid:
        os.chmod(self.workdir, 0o777)
        (self.workdir / "hosts").write_text("".join(f"{ip} {name}\n" for name, ip in self.hosts.items()))
        self.port = free_port()
        config = self.workdir / "squid.conf"
        config.write_text(
            f"http_port 127.0.0.1:{self.port}\n"
            f"pid_filename {self.workdir}/squid.pid\n"
            f"access_log stdio:{self.workdir}/access.log squid\n"
            f"cache_log {self.workdir}/cache.log\n"
            f"cache_store_log none\n"
            f"coredump_dir {self.workdir}\n"
            f"hosts_file {self.workdir}/hosts\n"
            "dns_nameservers 127.0.0.1\n"  # nothing beyond hosts_file: names it does not know fail fast
            "dns_timeout 1 seconds\n"
            "negative_dns_ttl 60 seconds\n"
            "cache deny all\n"
            "http_access allow all\n"  # CONNECT to any port too: the tests' registries are not on 443
            "visible_hostname cas-test-proxy\n"
            "shutdown_lifetime 0 seconds\n"
            "logfile_rotate 0\n"
        )
        self._proc = spawn([self.binary, "-N", "-f", str(config)], log=self.workdir / "squid.out")
        try:
            wait_until(self._listening, timeout=timeout, what=f"squid on 127.0.0.1:{self.port}")
        except (TimeoutError, GiveUp):
            terminate(self._proc)
            out = (self.workdir / "squid.out").read_text(errors="replace")
            log = (
                (self.workdir / "cache.log").read_text(errors="replace")
                if (self.workdir / "cache.log").exists()
                else ""
            )
            raise RuntimeError(f"squid did not start:\n{out[-2000:]}\n{log[-2000:]}") from None
        return self

    def _listening(self) -> bool:
        import socket

        if self._proc is not None and self._proc.poll() is not None:
            raise GiveUp("squid exited")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def requests(self) -> list[ProxiedRequest]:
        """Every request squid has logged so far (it logs each one when it ends)."""
        path = self.workdir / "access.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 7 and fields[5] != "-":  # time elapsed client code/status bytes method url ...
                out.append(ProxiedRequest(fields[5], fields[6], int(fields[3].rsplit("/", 1)[-1])))
        return out

    def mark(self) -> None:
        self._seen = len(self.requests())

    def new_requests(self) -> list[ProxiedRequest]:
        return self.requests()[self._seen :]


def named_tls_registry(directory: Path, name: str, repository: str, tag: str, image: Image) -> Registry:
    """A started TLS registry holding ``repository:tag``, its certificate (from a fresh test CA that
    nothing trusts) valid for ``name`` too, so that it can be reached by that name through squid."""
    import ssl

    from . import images
    from .pki import make_pki
    from .registry import Registry

    pki = make_pki(directory / "pki", names=(name,))
    registry = Registry(directory / "registry", tls=pki).start()
    images.push(registry, repository, tag, image, verify=ssl.create_default_context(cafile=str(pki.ca)))
    return registry
