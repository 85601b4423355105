"""A real registry (CNCF distribution 2.8, ``docker-registry serve``) on 127.0.0.1, with
server-side measurement read from its own access log.

Why: "a pull downloads only what is missing" is only believable when counted by the server,
not by the client under test.

Log facts (distribution 2.8.2 as packaged by Debian):
- stdout carries an Apache combined-format access log, one line per request *including* the
  401 auth challenges: ``127.0.0.1 - - [27/Nov/2026:18:43:59 +0000] "GET /v2/foo/blobs/sha256:..
  HTTP/1.1" 200 3000000 "" "curl/7.88.1"``. The byte field is the body bytes the server wrote
  (0 for HEAD, 100 for a 100-byte Range -> 206, the error JSON size for 404s).
- stderr carries the JSON app log (``formatter: json``); its ``"response completed"`` lines have
  the same ``http.response.written`` figure but are NOT written for 401 challenges, so it is
  not used for counting.
- For a client that hangs up early, the byte count is what the server pushed into the socket
  before noticing, which can exceed what the client read by the socket buffers (~1 MB here).
- The status is the last one the handler asked for, not always the one sent: an upload DELETE
  whose cleanup fails (it races the handler of a PUT the client cut short) sends 204, then logs
  500 ("error serving error json"). Assert what a client received through ``FaultProxy``.
- A line is written just after the handler returns, so ``requests()`` first sends a sentinel
  ``GET /v2/?cas-sync=N`` straight to the registry and waits until that line shows up;
  sentinels are left out of every result.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .tools import GiveUp, free_port, http_status, require, run, spawn, terminate, wait_until

if TYPE_CHECKING:  # both need `cryptography` (a test extra); scripts/demo runs without it
    from .pki import Pki
    from .tokenserver import TokenServer

AUTH_MODES = ("none", "basic", "token")
_SYNC = "cas-sync="

_PATHS = [
    ("base", re.compile(r"^/v2/?$")),
    ("catalog", re.compile(r"^/v2/_catalog$")),
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads(/(?P<ref>[^/]*))?$")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)$")),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
]


def classify_path(path: str) -> tuple[str, str | None, str | None]:
    """``(kind, repository, reference)`` of a registry API path; kind is one of
    base, catalog, upload, blob, manifest, tags, other."""
    path = unquote(urlsplit(path).path)
    for kind, pattern in _PATHS:
        m = pattern.match(path)
        if m:
            groups = m.groupdict()
            return kind, groups.get("name"), groups.get("ref")
    return "other", None, None


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the registry logged it."""

    method: str
    uri: str  # path plus query, as sent
    path: str
    status: int
    bytes: int  # http.response.written: body bytes the server wrote
    kind: str  # see classify_path
    repository: str | None
    reference: str | None  # digest or tag for blob/manifest paths
    time: str  # [27/Nov/2026:18:43:59 +0000]: one-second resolution
    user_agent: str


class Registry:
    """``docker-registry serve`` in auth mode "none", "basic" or "token".

    basic: htpasswd with ``username``/``password``. token: bearer tokens from ``token_server``
    (by default a TokenServer of our own that knows ``username``; pass e.g.
    ``TokenServer(dir, users=..., anonymous=False)`` for a registry with no anonymous pull).
    """

    def __init__(
        self,
        workdir: Path,
        auth: str = "none",
        *,
        username: str = "casuser",
        password: str = "caspassword",
        token_server: TokenServer | None = None,
        tls: Pki | None = None,
        client_certs: bool = False,
        proxy_remote: str | None = None,
        proxy_credentials: tuple[str, str] | None = None,
        extra_config: str = "",
    ) -> None:
        """``tls``: serve https with ``tls.server``; ``client_certs``: also require a client
        certificate signed by ``tls.ca`` (mutual TLS). ``proxy_remote``: run as a pull-through
        cache of that URL (start the upstream first: distribution panics when it cannot reach
        it), logging in there with ``proxy_credentials`` (a token upstream only, in 2.8).
        ``extra_config``: more top-level YAML sections, e.g. ``validation:`` to allow foreign-layer URLs."""
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        self.workdir = Path(workdir)
        self.auth = auth
        self.username = username if auth != "none" else None
        self.password = password if auth != "none" else None
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.access_log_path = self.workdir / "access.log"  # stdout: one line per request, parsed here
        self.log_path = self.workdir / "registry.log"  # stderr: the JSON app log, for humans
        self.token_server = token_server
        self.tls = tls
        self.client_certs = client_certs
        self.extra_config = extra_config
        self.proxy_remote = proxy_remote
        self.proxy_credentials = proxy_credentials
        self._own_token_server = False
        self.port: int | None = None
        self._proc = None
        self._lock = threading.Lock()
        self._records: list[LoggedRequest] = []
        self._offset = 0
        self._sync_ids = itertools.count(1)
        self._synced: set[str] = set()
        self._mark = 0
        self._flipped: dict[str, int] = {}

    # --- lifecycle -------------------------------------------------------------------
    @property
    def host(self) -> str:
        assert self.port is not None, "registry not started"
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self, timeout: float = 20, port: int | None = None) -> Registry:
        """Start on a free port, or on ``port`` (a restart keeps its address)."""
        binary = require("docker-registry", "docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        auth_yaml = self._auth_config()
        for attempt in range(3):  # another process may grab the port between probe and bind
            self.port = port or free_port()
            self.config_path.write_text(self._config(auth_yaml))
            self._offset, self._records, self._mark = 0, [], 0
            for log in (self.log_path, self.access_log_path):
                log.write_bytes(b"")
            self._proc = spawn(
                [binary, "serve", str(self.config_path)],
                log=self.access_log_path,
                stderr_log=self.log_path,
                env=_own_environment(),
            )
            try:
                wait_until(self._answers, timeout=timeout, what=f"registry on {self.host}")
                return self
            except (TimeoutError, GiveUp):
                exited = self._proc.poll() is not None
                terminate(self._proc)
                log = self.log_path.read_text(errors="replace")
                if not (exited and "address already in use" in log) or attempt == 2:
                    raise RuntimeError(f"docker-registry did not start; its log:\n{log[-3000:]}") from None
        raise AssertionError("unreachable")

    def stop_only(self) -> None:
        """Stop the registry process and nothing else (its token server keeps running); ``start(port=...)`` later."""
        terminate(self._proc)
        self._proc = None

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None
        if self._own_token_server and self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _auth_config(self) -> str:
        if self.auth == "basic":
            htpasswd = require("htpasswd", "apache2-utils")
            line = run([htpasswd, "-Bbn", self.username, self.password]).stdout.strip()
            (self.workdir / "htpasswd").write_text(line + "\n")
            return f"auth:\n  htpasswd:\n    realm: cas-test-basic\n    path: {self.workdir / 'htpasswd'}\n"
        if self.auth == "token":
            if self.token_server is None:
                from .tokenserver import TokenServer

                self.token_server = TokenServer(self.workdir / "token", users={self.username: self.password})
            ts = self.token_server
            if not ts.running:  # one we start is one we stop
                ts.start()
                self._own_token_server = True
            return (
                "auth:\n  token:\n"
                f"    realm: {ts.realm}\n    service: {ts.service}\n    issuer: {ts.issuer}\n"
                f"    rootcertbundle: {ts.cert_path}\n"
            )
        return ""

    def _config(self, auth_yaml: str) -> str:
        return (
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: json\n  fields:\n    service: registry\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.storage_dir}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
            "  secret: cas-test-secret\n"
            "  headers:\n    X-Content-Type-Options: [nosniff]\n"
            + self._tls_config()
            + auth_yaml
            + self._proxy_config()
            + self.extra_config
        )

    def _proxy_config(self) -> str:
        if self.proxy_remote is None:
            return ""
        text = f"proxy:\n  remoteurl: {self.proxy_remote}\n"
        if self.proxy_credentials is not None:
            text += f"  username: {self.proxy_credentials[0]}\n  password: {self.proxy_credentials[1]}\n"
        return text

    def _tls_config(self) -> str:
        if self.tls is None:
            return ""
        text = f"  tls:\n    certificate: {self.tls.server.cert}\n    key: {self.tls.server.key}\n"
        if self.client_certs:
            text += f"    clientcas:\n      - {self.tls.ca}\n"
        return text

    def _client_context(self):
        """For our own requests to a TLS registry: trust its CA, and present a client certificate."""
        if self.tls is None:
            return None
        import ssl

        context = ssl.create_default_context(cafile=str(self.tls.ca))
        if self.client_certs:
            context.load_cert_chain(str(self.tls.client.cert), str(self.tls.client.key))
        return context

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise GiveUp("registry exited")
        if self.tls is not None:  # our own probe: the handshake answering is enough
            return _tls_answers(self.port)
        return http_status(f"{self.url}/v2/", timeout=1) in (200, 401)

    # --- server-side measurement ---------------------------------------------------------
    def _sync(self) -> None:
        """Make sure every request that finished before this call is in ``self._records``."""
        token = f"{_SYNC}{next(self._sync_ids)}"
        http_status(f"{self.url}/v2/?{token}", timeout=5, context=self._client_context())  # 401: logged all the same
        wait_until(
            lambda: self._read_new() or token in self._synced,
            timeout=15,
            what=f"the registry on {self.host} to log a sync request",
        )

    def _read_new(self) -> bool:
        """Parse the complete lines appended since the last read. Returns False (for wait_until)."""
        with self._lock, open(self.access_log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
            end = data.rfind(b"\n") + 1  # only complete lines
            self._offset += end
            for line in data[:end].splitlines():
                record = _parse_line(line)
                if isinstance(record, str):
                    self._synced.add(record)
                elif record is not None:
                    self._records.append(record)
        return False

    def requests(self, since: int | None = None) -> list[LoggedRequest]:
        """Requests the registry finished after mark ``since`` (default: the last ``mark()``; 0 = all)."""
        self._sync()
        start = self._mark if since is None else since
        with self._lock:
            return self._records[start:]

    def mark(self) -> int:
        """Remember the current log position; later calls without ``since`` count only what follows."""
        self._sync()
        with self._lock:
            self._mark = len(self._records)
            return self._mark

    def blob_gets(self, since: int | None = None, digest: str | None = None) -> list[LoggedRequest]:
        """Blob GETs (any status) since the mark, optionally for one digest."""
        return [
            r
            for r in self.requests(since)
            if r.kind == "blob" and r.method == "GET" and (digest is None or r.reference == digest)
        ]

    def blob_bytes_served(self, since: int | None = None, digest: str | None = None) -> int:
        """Body bytes of successful blob GETs (200/206) since the mark."""
        return sum(r.bytes for r in self.blob_gets(since, digest) if r.status in (200, 206))

    def manifest_requests(self, since: int | None = None, method: str | None = None) -> list[LoggedRequest]:
        """Manifest requests (GET and HEAD unless ``method`` is given) since the mark."""
        return [r for r in self.requests(since) if r.kind == "manifest" and (method is None or r.method == method)]

    # --- fault injection on disk ---------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps the bytes of ``digest`` (sha256 only)."""
        alg, _, hexpart = digest.partition(":")
        if alg != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.storage_dir / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def corrupt_blob(self, digest: str, offset: int | None = None) -> int:
        """Flip one byte (default: the middle one) of a stored blob, so the registry serves bytes
        that do not match ``digest`` with the right length. Returns the offset; undo with
        ``restore_blob``."""
        path = self.blob_path(digest)
        if not path.exists():
            raise FileNotFoundError(f"the registry has no blob {digest} ({path})")
        if digest in self._flipped:
            return self._flipped[digest]
        size = path.stat().st_size
        offset = size // 2 if offset is None else offset
        _flip(path, offset)
        self._flipped[digest] = offset
        return offset

    def restore_blob(self, digest: str) -> None:
        """Undo ``corrupt_blob``."""
        offset = self._flipped.pop(digest, None)
        if offset is not None:
            _flip(self.blob_path(digest), offset)

    def restore_all_blobs(self) -> None:
        for digest in list(self._flipped):
            self.restore_blob(digest)

    # --- credentials -------------------------------------------------------------------
    def basic_auth_header(self) -> dict[str, str]:
        """``Authorization: Basic ...`` for this registry's user (useful for raw httpx calls)."""
        if self.username is None:
            return {}
        raw = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        if not byte:
            raise ValueError(f"offset {offset} is past the end of {path}")
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<uri>\S+) (?P<proto>[^"]*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>.*)"$'
)


def _parse_line(line: bytes) -> LoggedRequest | str | None:
    """A request record, the sync token of a sentinel request, or None for other lines."""
    m = _ACCESS_LINE.match(line.decode("utf-8", "replace").rstrip("\r\n"))
    if m is None:
        return None
    uri = m["uri"]
    if _SYNC in uri:
        return uri[uri.index(_SYNC) :]
    path = urlsplit(uri).path
    kind, repository, reference = classify_path(path)
    return LoggedRequest(
        method=m["method"],
        uri=uri,
        path=path,
        status=int(m["status"]),
        bytes=0 if m["bytes"] == "-" else int(m["bytes"]),
        kind=kind,
        repository=repository,
        reference=reference,
        time=m["time"],
        user_agent=m["agent"],
    )


__all__ = ["Registry", "LoggedRequest", "classify_path", "AUTH_MODES"]


def _tls_answers(port: int) -> bool:
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            with context.wrap_socket(sock):
                return True
    except ssl.SSLError:
        return True  # it speaks TLS (and wants a client certificate)
    except OSError:
        return False


def _own_environment() -> dict[str, str]:
    """The environment without ``REGISTRY_*``: distribution reads those as configuration
    (``REGISTRY_AUTH_FILE``, podman's login file, would be its ``auth.file`` and stop it)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("REGISTRY_")}
