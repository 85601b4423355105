"""One requester per reference: how every request reaches a registry, whatever it is for.

The manifest, blob, range and upload code compose one ``Requester`` (as pip's ``network/``
composes one session into its downloaders) and use only its public methods. It owns:

- the pooled ``httpx.Client`` (made on first use, TLS only when an https URL is contacted);
- each endpoint's auth state: credentials are looked up for its own host, and explicit ones
  (``-u``) go to the upstream only;
- redirects, followed by hand without carrying an endpoint's Authorization or configured
  headers to another origin (an insecure endpoint switches to plain HTTP here, once);
- statuses mapped to CasErrors (``cas.registry.failures``);
- the endpoint walk with its dead endpoints (``cas.registry.walk``);
- retries: ``retrying`` runs an attempt under a ``Patience`` (``cas.registry.retry``), so the
  whole wait without progress, retries included, stays within ``timeout``; each attempt may
  wait only what is left of it. Every retry is logged (``cas.registry``, -v) and counted in
  ``served.retries``; one that waits SAID_FROM or more is said as it happens (``on_retry``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx

from cas import __version__
from cas.errors import CasError, RegistryError, Unreachable
from cas.registry import insecure
from cas.registry.auth import RegistryAuth, TokenCache
from cas.registry.credentials import Credentials
from cas.registry.endpoints import TLS, Endpoint
from cas.registry.failures import describe_transport_error, status_error
from cas.registry.retry import MAX_RETRY_AFTER, Patience, Transient
from cas.registry.shared import KeyedPool
from cas.registry.transport import LazyTLSTransport
from cas.registry.walk import Served, walk
from cas.settings import DEFAULT_TIMEOUT

MAX_REDIRECTS = 5
REFUSED_RETRIES = 2  # a refused connection with no endpoint left: retried briefly (a registry restarting)
REFUSED_BACKOFF = 0.1  # so it fails within about 0.3 s, not after the full backoff
MORE_TIME = "allow more time with --timeout (or $CAS_TIMEOUT)"
SAID_FROM = 0.25  # seconds: a shorter wait (a refused connection's) is over before its line could be read; -v logs it
_RETRY_LIMITS = {"refused": REFUSED_RETRIES, "connect-timeout": 1}
_T = TypeVar("_T")

log = logging.getLogger("cas.registry")


class Requester:
    def __init__(
        self,
        registry: str,
        endpoints: list[Endpoint],
        *,
        credentials: Credentials | None = None,
        token_cache: TokenCache | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT,
        on_retry: Callable[[str], None] | None = None,
        shared: KeyedPool[httpx.Client] | None = None,
    ) -> None:
        """``endpoints``: mirrors first, the upstream last. ``timeout``: the longest an operation waits
        without progress, retries included. ``on_retry(line)``: told of each retry as it happens.
        ``shared``: where the httpx client comes from when other requesters of the command may reuse it."""
        self.registry = registry
        self.endpoints = endpoints
        self.upstream = endpoints[-1]
        self.retries = max(0, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.served = Served()
        self._on_retry = on_retry
        self._credentials = credentials
        self._token_cache = token_cache
        self._auths: dict[str, RegistryAuth] = {}
        self._http: httpx.Client | None = None
        self._shared = shared
        self._lock = threading.Lock()
        self._current = threading.local()  # the Patience of the operation this thread is retrying

    # lifecycle -----------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                tls = {
                    ep.host.removesuffix(":443"): ep.tls
                    for ep in self.endpoints
                    if ep.scheme == "https" and ep.tls != TLS()
                }
                key = (tuple(sorted(tls.items())), self.timeout)
                make = functools.partial(self._client, tls)
                self._http = make() if self._shared is None else self._shared.get(key, make)
            return self._http

    def _client(self, tls: dict[str, TLS]) -> httpx.Client:
        return httpx.Client(
            transport=LazyTLSTransport(tls),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,  # no .netrc; proxies are chosen by the transport
            headers={"User-Agent": f"cas/{__version__}"},
        )

    def close(self) -> None:
        """Closes the client unless it is shared (its owner closes it)."""
        with self._lock:
            if self._http is not None and self._shared is None:
                self._http.close()
            self._http = None

    # endpoints and retries ----------------------------------------------------
    def walk(self, capability: str, what: str, attempt: Callable[[Endpoint, bool], _T]) -> _T:
        """``attempt(endpoint, has_next)`` on each endpoint that may ``capability``, skipping dead ones."""
        return walk(self.endpoints, capability, what, self.served, attempt)

    def patience(self, *, mark: int = 0, has_next: bool = False) -> Patience:
        """A fresh Patience for one operation (``mark``: the progress it starts from)."""
        return Patience(min(1, self.retries) if has_next else self.retries, self.backoff, self.timeout, mark=mark)

    def retried(self, delay: float, reason: str) -> None:
        """Say that a retry comes in ``delay`` seconds, and why (stderr unless -q; the -v log)."""
        line = f"retrying in {delay:.1f} s: {reason}"
        log.info("%s", line)
        self.served.retried()
        if self._on_retry is not None and delay >= SAID_FROM:
            self._on_retry(line)

    def retrying(
        self, ep: Endpoint, attempt: Callable[[], _T], has_next: bool = False, patience: Patience | None = None
    ) -> _T:
        """Run ``attempt`` until it succeeds, retrying Transient answers and transport errors.

        With another endpoint left nothing is retried: falling back is quicker. A
        refused connection is retried only briefly, a connection timeout once. A
        ``patience`` given by the caller (a blob stream) is shared with its own retries.
        """
        patience = patience or self.patience()
        outer = getattr(self._current, "patience", None)
        self._current.patience = patience
        try:
            while True:
                try:
                    return attempt()
                except Transient as exc:
                    too_long = (exc.retry_after or 0) > MAX_RETRY_AFTER
                    delay = None if has_next or too_long else patience.failed(retry_after=exc.retry_after)
                    if delay is None:
                        raise _more_time(exc.final, patience) from None
                    reason = exc.final.message
                except httpx.TransportError as exc:
                    failure = describe_transport_error(exc, ep.url, ep.source)
                    limit = 0 if has_next or not failure.retryable else _RETRY_LIMITS.get(failure.kind)
                    base = _first_wait(failure.kind, patience.failures, self.backoff)
                    reason = f"cannot reach {self.who(ep, exc)}: {failure.reason}"
                    delay = patience.failed(limit=limit, base=base)
                    if delay is None:
                        raise _more_time(Unreachable(reason, hint=failure.hint), patience) from exc
                except httpx.HTTPError as exc:  # decoding errors, too many redirects: not worth retrying
                    raise RegistryError(f"bad answer from {self.who(ep, exc)}: {exc}") from exc
                except httpx.InvalidURL as exc:
                    raise RegistryError(f"invalid URL for {ep.named(self.registry)}: {exc}") from exc
                self.retried(delay, reason)
                time.sleep(delay)
        finally:
            self._current.patience = outer

    def who(self, ep: Endpoint, exc: httpx.HTTPError) -> str:
        """The endpoint as errors name it, with the host that failed when a redirect led elsewhere."""
        try:
            netloc = exc.request.url.netloc.decode()
        except RuntimeError:  # no request attached
            netloc = ep.host
        name = ep.named(self.registry)
        return name if netloc == ep.host else f"{netloc} (for {name})"

    # requests ------------------------------------------------------------
    def open(
        self,
        ep: Endpoint,
        url: str,
        headers: dict[str, str],
        repository: str,
        shown: str,
        *,
        kind: str,
        ok: tuple[int, ...],
        method: str = "GET",
        content: bytes | Iterator[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> httpx.Response:
        """One request with auth (redirects followed for GET and HEAD); a streaming response whose
        status is in ``ok``, else a mapped error (a Transient one for ``retrying``)."""
        response = self._send_following(ep, url, headers, repository, method=method, content=content, scopes=scopes)
        if response.status_code in ok:
            return response
        try:
            body = response.read()
        except httpx.HTTPError:
            body = b""  # the status says enough
        finally:
            response.close()
        raise status_error(response, body, registry=ep.host, repository=repository, shown=shown, kind=kind)

    def _auth_for(self, endpoint: Endpoint) -> RegistryAuth:
        """One auth state per endpoint host; explicit credentials are the upstream's, never a mirror's."""
        key = f"{endpoint.mirror}|{endpoint.host}"
        with self._lock:
            auth = self._auths.get(key)
            if auth is None:
                credentials = None if endpoint.mirror else self._credentials
                auth = self._auths[key] = RegistryAuth(
                    endpoint.host,
                    credentials=credentials,
                    token_cache=self._token_cache,
                    plain_http=endpoint.insecure or endpoint.scheme == "http",
                )
            return auth

    def _attempt_timeout(self) -> httpx.Timeout:
        """What is left of the current operation's wait (all of ``timeout`` outside ``retrying``)."""
        patience = getattr(self._current, "patience", None)
        return httpx.Timeout(self.timeout if patience is None else max(0.01, patience.remaining()))

    def _send_following(
        self,
        ep: Endpoint,
        url: str,
        headers: dict[str, str],
        repository: str,
        *,
        method: str = "GET",
        content: bytes | Iterator[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> httpx.Response:
        """Send, following up to MAX_REDIRECTS redirects by hand (GET and HEAD only).

        The endpoint's credentials and configured headers go only to its own
        origin: a URL on another origin (a CDN redirect, an upload Location
        elsewhere) gets neither, and no later hop does.
        """
        http = self.http
        auth: httpx.Auth | None = self._auth_for(ep).scoped(repository, scopes)
        origin = httpx.URL(insecure.url_for(ep, ep.url))
        sent: list[tuple[str, str]] = [*ep.headers, *headers.items()]
        target = httpx.URL(insecure.url_for(ep, url))
        if not _same_origin(target, origin):
            auth, sent = None, list(headers.items())
        timeout = self._attempt_timeout()

        def send(target: httpx.URL) -> httpx.Response:
            request = http.build_request(method, target, headers=sent, content=content, timeout=timeout)
            return http.send(request, auth=auth, stream=True, follow_redirects=False)

        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = send(target)
            except httpx.ConnectError as exc:  # an insecure endpoint may speak plain HTTP: switch once
                plain = insecure.fall_back(ep, str(target), exc)
                if plain is None:
                    raise
                target, origin = httpx.URL(plain), httpx.URL(insecure.url_for(ep, ep.url))
                response = send(target)
            location = response.headers.get("Location")
            if not (response.is_redirect and location and method in ("GET", "HEAD")):
                return response
            response.close()
            target = response.url.join(location)
            if not _same_origin(target, origin):
                auth, sent = None, list(headers.items())
        raise RegistryError(f"{ep.named(self.registry)}: more than {MAX_REDIRECTS} redirects for {url}")


def _first_wait(kind: str, failures: int, backoff: float) -> float | None:
    """The backoff base for a transport failure (None: the usual one). A connection dropped before
    any answer is tried again at once the first time, as Go's and urllib3's clients do: it is most
    often an idle pooled connection the server had closed. A refused one waits briefly."""
    if kind == "dropped" and failures == 0:
        return 0.0
    return min(REFUSED_BACKOFF, backoff) if kind == "refused" else None


def _more_time(error: CasError, patience: Patience) -> CasError:
    """``error``, its hint suggesting a longer --timeout only when the clock, not the count, ended the retries."""
    if patience.out_of_time:
        error.hint = f"{error.hint}; or {MORE_TIME}" if error.hint else MORE_TIME
    return error


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
