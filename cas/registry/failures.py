"""How HTTP answers and transport failures become CasErrors, with hints.

Every status the client does not want and every httpx transport error goes
through here, so the wording users see lives in one place.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from cas.errors import AuthError, NotFound, RateLimited, RegistryError, ServerError
from cas.registry.retry import MAX_RETRY_AFTER, Transient, is_retryable_status, parse_retry_after
from cas.registry.transport import proxy_for
from cas.registry.wire import error_detail, is_loopback

TLS_CA_HINT = (
    "if the registry uses a private CA, point SSL_CERT_FILE at a bundle that includes it, or put it in certs.d"
)


def status_error(
    response: httpx.Response, body: bytes, *, registry: str, repository: str, shown: str, kind: str
) -> Exception:
    """The CasError (or Transient, for a retry) for a status we did not want.

    ``kind`` is "manifest", "blob" or "upload" (a push's requests); ``shown`` names
    what was asked for, e.g. ``HOST/REPO:TAG`` or ``blob sha256:... of HOST/REPO``.
    """
    status = response.status_code
    code, detail = error_detail(body)
    said = f": {detail}" if detail else ""
    if is_retryable_status(status):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            final: RegistryError = RateLimited(
                f"registry {registry} is rate limiting us{said}",
                hint=_rate_hint(retry_after),
            )
        else:
            final = ServerError(
                f"registry {registry} answered {status} for {shown}{said}",
                hint="the registry is having trouble; try again later",
            )
        return Transient(final, retry_after)
    if status == 401:  # only from a redirect target: the registry's own 401s end in the auth flow
        return AuthError(f"{response.url.netloc.decode()} refused {shown} (401){said}")
    if status == 403:
        verb = "push to" if kind == "upload" else "pull"
        return AuthError(
            f"access denied to {repository} on {registry}{said}",
            hint=f"check that your account may {verb} {repository}; `docker login {registry}` to change accounts",
        )
    if kind == "upload":
        return RegistryError(
            f"registry {registry} answered {status} to {shown}{said}",
            hint="nothing was tagged: the manifest is pushed only after every blob is in place",
        )
    if status == 404:
        if kind == "blob" or code == "BLOB_UNKNOWN":
            return NotFound(f"{shown} not found{said}", hint="the manifest names a blob the registry does not have")
        return NotFound(
            f"image {shown} not found{said}",
            hint="check the repository name and the tag or digest",
        )
    if status == 400 and "http request to an https server" in detail.lower():  # Go's answer to plain HTTP
        return RegistryError(
            f"registry {registry} speaks HTTPS, not plain HTTP ({shown}){said}",
            hint="mark it insecure (--insecure) to use HTTPS without verifying its certificate, "
            "or write https:// with its CA where it is configured",
        )
    return RegistryError(f"registry {registry} answered {status} for {shown}{said}")


def _rate_hint(retry_after: float | None) -> str:
    if retry_after is not None and retry_after > MAX_RETRY_AFTER:
        return f"the registry asks to wait {retry_after:.0f} s; try again then, or log in for a higher limit"
    return "try again later, or log in for a higher limit"


@dataclass(frozen=True)
class TransportFailure:
    """What went wrong below HTTP, for the user: ``reason`` fits "cannot reach X: <reason>"."""

    kind: str  # tls-plain, tls-cert, tls, connect-timeout, timeout, dns, refused, connect, dropped
    reason: str
    hint: str
    retryable: bool


PROXY_HINT = "check the proxy in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, or list the registry in NO_PROXY"
_TO_PROXY = frozenset({"dns", "refused", "connect", "connect-timeout"})  # the first hop is the proxy


def describe_transport_error(exc: BaseException, url: str = "", source: str = "") -> TransportFailure:
    """What ``_describe`` says, naming the proxy when the connection that failed was the proxy's."""
    failure = _describe(exc, url, source)
    proxy = proxy_for(httpx.URL(url)) if url else None
    if proxy and (failure.kind in _TO_PROXY or isinstance(exc, httpx.ProxyError)):
        reason = failure.reason if failure.kind in _TO_PROXY else f"the proxy said {_first_line(exc)}"
        return TransportFailure(failure.kind, f"{reason} (through proxy {proxy})", PROXY_HINT, failure.retryable)
    return failure


def _describe(exc: BaseException, url: str = "", source: str = "") -> TransportFailure:
    """The failure an httpx transport error stands for, from its cause chain.

    ``url`` is the endpoint's base URL and ``source`` the file that configured it
    ("" for the registry named in the reference): they decide which fix the hint
    offers. ``--insecure`` is offered only where it can help: a registry named in
    the reference whose certificate is not trusted (insecure skips verification),
    or, not on loopback, that speaks plain HTTP (insecure falls back to it).
    """
    chain = list(_causes(exc))
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    text = " ".join(str(e) for e in chain).lower()
    if tls is not None or "[ssl" in text or "certificate verify" in text:
        if "wrong_version_number" in text or "record layer" in text or "http request" in text:
            return TransportFailure(
                "tls-plain",
                "TLS handshake failed: it looks like a plain-HTTP registry",
                _plain_hint(url, source),
                False,
            )
        if "certificate" in text:
            reason = f"TLS certificate not trusted ({_first_line(tls or exc)})"
            return TransportFailure("tls-cert", reason, TLS_CA_HINT + _untrusted_fix(source), False)
        where = f", or set ca = in {source}" if _kind(source) == "hosts.toml" else ""
        return TransportFailure("tls", f"TLS error ({_first_line(tls or exc)})", TLS_CA_HINT + where, False)
    if isinstance(exc, httpx.TimeoutException):
        hint = "check the network and that the registry is up"  # the requester adds --timeout when it could help
        if isinstance(exc, httpx.ConnectTimeout):
            return TransportFailure("connect-timeout", "connection timed out", hint, True)
        return TransportFailure("timeout", "timed out", hint, True)
    dns_words = ("name or service not known", "name resolution", "nodename nor servname")
    if any(isinstance(e, socket.gaierror) for e in chain) or any(w in text for w in dns_words):
        # "Name or service not known" (EAI_NONAME) is an answer, not an outage: retrying only delays
        # the error (about 13 s of backoff); "Temporary failure in name resolution" is worth retrying.
        unknown = any(isinstance(e, socket.gaierror) and e.errno == socket.EAI_NONAME for e in chain)
        unknown = unknown or "name or service not known" in text or "nodename nor servname" in text
        return TransportFailure("dns", "cannot resolve the host name", "check the registry's host name", not unknown)
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return TransportFailure(
            "refused", "connection refused", "check that the registry is running at that host and port", True
        )
    if isinstance(exc, httpx.ConnectError):
        return TransportFailure("connect", f"cannot connect ({_first_line(exc)})", "check the network", True)
    return TransportFailure("dropped", "connection dropped", "run the command again; downloads resume", True)


def _kind(source: str) -> str:
    """Which kind of file configured an endpoint: hosts.toml, daemon.json or registries.conf ("" for none)."""
    if not source:
        return ""
    return (
        "hosts.toml" if source.endswith(".toml") else "daemon.json" if source.endswith(".json") else "registries.conf"
    )


def _untrusted_fix(source: str) -> str:
    """How to skip verification for one registry, where its endpoint came from."""
    return {
        "": ", or pass --insecure to skip verification",
        "hosts.toml": f", or set ca = (or skip_verify = true) in {source}",
        "daemon.json": f", or list its host[:port] in insecure-registries in {source}",
        "registries.conf": f", or set insecure = true for it in {source}",
    }[_kind(source)]


def _plain_hint(url: str, source: str) -> str:
    kind = _kind(source)
    if kind == "registries.conf":
        return f"if it serves plain HTTP, set insecure = true for it in {source}"
    if kind == "daemon.json":
        return f"if it serves plain HTTP, write its URL as http://... or list it in insecure-registries in {source}"
    if kind:
        return f"if it serves plain HTTP, write its URL as http://... in {source}"
    host = url.split("://", 1)[-1].split("/", 1)[0]
    if host and not is_loopback(host):
        return "for a registry that serves plain HTTP, pass --insecure"
    return "the server answered in plain HTTP, not TLS"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
