"""An httpx transport that builds the TLS context only when an https URL is contacted.

``httpx.Client()`` loads the certifi bundle at construction (about 90 ms),
even for a plain-http registry on loopback. This transport keeps one pooled
``httpx.HTTPTransport`` per (scheme, proxy), and per host for https, and creates
an https one, with that registry's verified context, on first use. The plain-http pool gets a
context with no CA loaded, so it fails closed if it were ever asked for TLS.

Proxies come from the usual environment variables (HTTPS_PROXY, HTTP_PROXY,
ALL_PROXY, NO_PROXY); loopback hosts are never proxied.

Read size: httpcore reads a plain-HTTP socket 64 KiB at a time. Blob streaming
is about 40 % faster with 1 MiB reads (measured on loopback), and httpcore has
no per-pool setting for it, so this module raises the class-wide
``httpcore.HTTP11Connection.READ_NUM_BYTES`` to READ_SIZE when a transport is
made. A recv returns what is there, so small answers are not slowed down.

Every request is logged on ``cas.registry.http`` at DEBUG (``cas -v``): method, URL
without user info or query string (a CDN's signed query is a credential), status,
body bytes and time, once the body is read or closed; a body cut short (a reset, a
timeout) says so, with the error, instead of reading as a success. Headers are never logged.

The read size is a private attribute, so it is raised only where it exists: an httpcore
without it is slower, not broken. httpcore is not pinned below a version for it;
tests/test_dependency_internals.py fails loudly when an upgrade drops or stops reading it.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx

from cas.errors import RegistryError
from cas.registry.endpoints.model import TLS
from cas.registry.shared import KeyedPool
from cas.registry.wire import is_loopback

READ_SIZE = 1 << 20
log = logging.getLogger("cas.registry.http")

CERTS_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")  # $CAS_CERTS_DIRS overrides (":"-separated)
_HASH_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")  # a CA in OpenSSL's hashed layout: 5ad8a5d6.0

_tls_lock = threading.Lock()
_tls_contexts: dict[tuple[str, TLS | None], ssl.SSLContext] = {}


def tls_context(netloc: str, settings: TLS | None = None) -> ssl.SSLContext:
    """The verified client context for one registry ("host" or "host:port"), built once per process.

    Trust is what docker trusts: the system store (or SSL_CERT_FILE / SSL_CERT_DIR),
    certifi only when the system has no store, plus the registry's own certs.d
    directory: ``*.crt`` are extra CAs, ``NAME.cert`` + ``NAME.key`` a client certificate;
    plus ``settings`` from a hosts.toml (``ca``, ``client``, ``skip_verify``).
    """
    with _tls_lock:
        context = _tls_contexts.get((netloc, settings))
        if context is None:
            verify = settings is None or not settings.skip_verify
            context = _tls_contexts[(netloc, settings)] = _build_context(netloc, verify)
            if settings is not None:
                _apply(context, netloc, settings)
        return context


def _apply(context: ssl.SSLContext, netloc: str, settings: TLS) -> None:
    try:
        for ca in settings.ca if not settings.skip_verify else ():
            context.load_verify_locations(cafile=ca)
        for cert, key in settings.client:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise RegistryError(
            f"cannot use the TLS files configured for {netloc}: {exc}",
            hint="ca and client in hosts.toml name PEM files (client: a certificate and its key)",
        ) from exc
    if settings.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE


def _build_context(netloc: str, verify: bool = True) -> ssl.SSLContext:
    """``verify=False`` (skip_verify, an insecure registry): no CA is loaded, which saves ~40 ms."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, hostname included
    if verify:
        _trust_system_store(context)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for directory in certs_dirs(netloc):
        for entry in sorted(directory.iterdir()):
            try:
                if entry.suffix == ".crt" and verify:
                    context.load_verify_locations(cafile=str(entry))
                elif entry.suffix == ".cert":
                    context.load_cert_chain(str(entry), str(entry.with_suffix(".key")))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(
                    f"cannot use {entry} for registry {netloc}: {exc}",
                    hint="certs.d holds CA files NAME.crt and client pairs NAME.cert + NAME.key, in PEM",
                ) from exc
    return context


def _trust_system_store(context: ssl.SSLContext, paths: ssl.DefaultVerifyPaths | None = None) -> None:
    """Trust what the system trusts, without parsing every CA up front when that can be avoided.

    Loading the system bundle parses ~140 certificates (~20 ms, several times that on a busy
    machine), once per registry host a command talks to (Docker Hub: two). The system's CA
    directory in OpenSSL's hashed layout (Debian's /etc/ssl/certs, which update-ca-certificates
    fills from the same CAs as the bundle) is read lazily instead: only the issuers a handshake
    needs are looked up. With SSL_CERT_FILE or SSL_CERT_DIR set, or no hashed directory, the
    bundle is loaded as OpenSSL's defaults say.
    """
    paths = paths or ssl.get_default_verify_paths()
    chosen = os.environ.get(paths.openssl_cafile_env) or os.environ.get(paths.openssl_capath_env)
    if not chosen and paths.capath and _hashed(paths.capath):
        context.load_verify_locations(capath=paths.capath)
    elif paths.cafile or paths.capath:
        context.load_default_certs()
    else:  # no system store at all
        import certifi

        context.load_verify_locations(cafile=certifi.where())


def _hashed(directory: str) -> bool:
    """Whether ``directory`` holds CAs under OpenSSL's subject-hash names (``5ad8a5d6.0``)."""
    try:
        with os.scandir(directory) as entries:
            return any(_HASH_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def certs_dirs(netloc: str) -> list[Path]:
    """The certs.d directories that exist for ``netloc`` (docker names them host:port, or host for 443)."""
    roots = os.environ.get("CAS_CERTS_DIRS")
    found = []
    for root in roots.split(":") if roots else CERTS_DIRS:
        if root and (Path(root) / netloc).is_dir():
            found.append(Path(root) / netloc)
    return found


def proxy_for(url: httpx.URL) -> str | None:
    """The proxy URL to use for ``url``, from the environment; None for direct."""
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    if is_loopback(host) or is_loopback(url.host):
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(url.host, proxies):
        return None
    return proxy


def preload() -> None:
    """Import httpx's connection stack now: it loads on the first request otherwise, which a
    long-running server's first client would wait for (about 0.1 s)."""
    httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), trust_env=False).close()


class LazyTLSTransport(httpx.BaseTransport):
    def __init__(self, tls: dict[str, TLS] | None = None) -> None:
        """``tls``: per host[:port], TLS settings on top of docker's trust (from hosts.toml)."""
        _raise_read_size()
        self._tls = tls or {}
        self._pools: KeyedPool[httpx.HTTPTransport] = KeyedPool()  # https: one per host (its certs.d)

    def _pool(self, url: httpx.URL) -> httpx.HTTPTransport:
        key = (url.scheme, _netloc(url) if url.scheme == "https" else "", proxy_for(url))
        return self._pools.get(key, lambda: self._make_pool(url, key[2]))

    def _make_pool(self, url: httpx.URL, proxy: str | None) -> httpx.HTTPTransport:
        context = (
            tls_context(_netloc(url), self._tls.get(_netloc(url)))
            if url.scheme == "https" or proxy
            else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        )
        return httpx.HTTPTransport(verify=context, proxy=proxy, trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not log.isEnabledFor(logging.DEBUG):
            return self._pool(request.url).handle_request(request)
        started = time.monotonic()
        try:
            response = self._pool(request.url).handle_request(request)
        except httpx.TransportError as exc:
            log.debug("%s %s: %s after %.3f s", request.method, shown_url(request.url), exc, time.monotonic() - started)
            raise
        response.stream = _LoggedStream(response.stream, request, response.status_code, started)
        return response

    def close(self) -> None:
        self._pools.close()


class _LoggedStream(httpx.SyncByteStream):
    """A response body that logs its request once, with the bytes read, when it is closed."""

    def __init__(self, inner: httpx.SyncByteStream, request: httpx.Request, status: int, started: float) -> None:
        self._inner = inner
        self._line = f"{request.method} {shown_url(request.url)} {status}"
        self._started = started
        self._bytes = 0
        self._logged = False
        self._end: str | None = None  # how the body ended, when not at its end: cut (an error) or left

    def __iter__(self) -> Iterator[bytes]:
        self._end = "left unread"
        try:
            for chunk in self._inner:
                self._bytes += len(chunk)
                yield chunk
        except Exception as exc:
            self._end = f"cut: {exc}"
            raise
        self._end = None

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if not self._logged:
                self._logged = True
                took = time.monotonic() - self._started
                if self._end is None:
                    log.debug("%s, %d bytes in %.3f s", self._line, self._bytes, took)
                else:  # "cut: peer closed connection ...", or "left unread" (a stall, a failed sibling)
                    log.debug("%s, %d bytes in %.3f s, then %s", self._line, self._bytes, took, self._end)


def shown_url(url: httpx.URL) -> str:
    """``url`` fit for a log: no user info, and no query (signed CDN queries carry credentials)."""
    return str(url.copy_with(userinfo=b"", query=None)) + ("?..." if url.query else "")


def _netloc(url: httpx.URL) -> str:
    return url.host if url.port in (None, 443) else f"{url.host}:{url.port}"


def _raise_read_size() -> None:
    import httpcore  # already imported by httpx's transports

    connection = getattr(httpcore, "HTTP11Connection", None)
    if connection is not None and getattr(connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
        connection.READ_NUM_BYTES = READ_SIZE
