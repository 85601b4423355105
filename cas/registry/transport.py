"""An httpx transport that builds the TLS context only when an https URL is contacted.

``httpx.Client()`` loads the certifi bundle at construction (about 90 ms),
even for a plain-http registry on loopback. This transport keeps one pooled
``httpx.HTTPTransport`` per (scheme, proxy) and creates the https one, with
the process-wide verified context, on first use. The plain-http pool gets a
context with no CA loaded, so it fails closed if it were ever asked for TLS.

Proxies come from the usual environment variables (HTTPS_PROXY, HTTP_PROXY,
ALL_PROXY, NO_PROXY); loopback hosts are never proxied.

Read size: httpcore reads a plain-HTTP socket 64 KiB at a time. Blob streaming
is about 40 % faster with 1 MiB reads (measured on loopback), and httpcore has
no per-pool setting for it, so this module raises the class-wide
``httpcore.HTTP11Connection.READ_NUM_BYTES`` to READ_SIZE when a transport is
made. A recv returns what is there, so small answers are not slowed down.
"""

from __future__ import annotations

import ssl
import threading
import urllib.request

import httpx

from cas.registry.wire import is_loopback

READ_SIZE = 1 << 20

_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The verified client context: SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi. Built once."""
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = httpx.create_ssl_context()
        return _tls_context


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


class LazyTLSTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        _raise_read_size()
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str | None], httpx.HTTPTransport] = {}

    def _pool(self, url: httpx.URL) -> httpx.HTTPTransport:
        key = (url.scheme, proxy_for(url))
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                context = tls_context() if url.scheme == "https" or key[1] else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                pool = httpx.HTTPTransport(verify=context, proxy=key[1], trust_env=False)
                self._pools[key] = pool
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._pool(request.url).handle_request(request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _raise_read_size() -> None:
    import httpcore  # already imported by httpx's transports

    if getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
        httpcore.HTTP11Connection.READ_NUM_BYTES = READ_SIZE
