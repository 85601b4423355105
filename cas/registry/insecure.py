"""Insecure endpoints: HTTPS without verifying the certificate, plain HTTP when the server speaks only that.

That is what "insecure" means to docker (``insecure-registries``), podman and
skopeo (registries.conf ``insecure = true``, ``--tls-verify=false``) and crane
(``--insecure``): they try HTTPS with verification off, then plain HTTP. They
switch after any failure of the HTTPS attempt; cas switches only when the TLS
handshake failed because the server answered it in plain HTTP. A refused
connection, a timeout or an unknown name would fail the same way over HTTP,
and switching would only hide the first error behind a second one.

The endpoint's URL keeps its https scheme (messages, credentials and the
per-host TLS context stay keyed by it); the client sends each request through
``url_for``, which rewrites the endpoint's own origin to http once the server
was found to speak plain HTTP. That is remembered per process, by host[:port],
so only the first request pays the failed handshake; not on disk, so a
registry that gains TLS is reached over it by the next command.
"""

from __future__ import annotations

import logging
import threading

from cas.registry.endpoints import Endpoint
from cas.registry.failures import describe_transport_error

log = logging.getLogger("cas.registry.insecure")

_lock = threading.Lock()
_plain: set[str] = set()  # host[:port] of insecure endpoints found to speak plain HTTP, in this process


def url_for(endpoint: Endpoint, url: str) -> str:
    """``url`` as it is to be sent: on an insecure endpoint that speaks plain HTTP, its origin in http."""
    if endpoint.host in _plain and endpoint.insecure and _on_origin(endpoint, url):
        return "http://" + url.removeprefix("https://")
    return url


def fall_back(endpoint: Endpoint, url: str, exc: BaseException) -> str | None:
    """The plain-HTTP URL to send ``url`` to instead, when ``exc`` (a failed connection) shows that an
    insecure endpoint's server speaks only plain HTTP; None when nothing is to be switched."""
    if not (endpoint.insecure and _on_origin(endpoint, url)):
        return None
    if describe_transport_error(exc).kind != "tls-plain":
        return None
    with _lock:
        _plain.add(endpoint.host)
    log.info("%s answered TLS in plain HTTP; insecure, so plain HTTP from now on", endpoint.host)
    return "http://" + url.removeprefix("https://")


def _on_origin(endpoint: Endpoint, url: str) -> bool:
    origin = f"https://{endpoint.host}"
    return url.startswith(origin) and url[len(origin) : len(origin) + 1] in ("", "/", "?")
