"""Walking a reference's endpoints: which to try, when to fall back, and what each one served.

The rules (containerd's and podman's):
- only endpoints with the capability an operation needs are tried: ``resolve``
  for a tag, ``pull`` for content addressed by digest;
- any registry failure of an endpoint that is not the last one (connection
  refused or reset, timeout, stall, 5xx, 404, 401/403, wrong bytes) moves on to
  the next one, and is logged (logger ``cas.registry``) and reported;
- an endpoint that could not be reached is remembered as dead for the rest of
  the process and skipped (reported once), so a dead mirror costs one refused
  connection, not one per blob; the last endpoint is always tried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cas.errors import IntegrityError, ManifestError, RegistryError, Unreachable
from cas.registry.endpoints import Endpoint
from cas.registry.insecure import url_for

log = logging.getLogger("cas.registry")
_T = TypeVar("_T")

_dead: dict[str, str] = {}  # endpoint URL -> why it was found dead (this process)
_dead_lock = threading.Lock()


def dead_reason(url: str) -> str | None:
    with _dead_lock:
        return _dead.get(url)


def mark_dead(url: str, reason: str) -> None:
    with _dead_lock:
        _dead.setdefault(url, reason)


def forget_dead() -> None:
    """Forget every dead endpoint (a long-running process whose network came back; tests)."""
    with _dead_lock:
        _dead.clear()


@dataclass(frozen=True)
class Fallback:
    endpoint: str
    what: str  # "manifest HOST/REPO:TAG" or "blob sha256:..."
    reason: str

    def to_json(self) -> dict:
        return {"endpoint": self.endpoint, "what": self.what, "reason": self.reason}


@dataclass
class Served:
    """What the endpoints of one client served: which answered the first manifest, bytes per endpoint,
    fallbacks, retries."""

    manifest_endpoint: str | None = None
    bytes: dict[str, int] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)
    retries: int = 0  # requests, streams and ranges tried again after a failure
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, endpoint: Endpoint, n: int) -> None:
        if n > 0:
            url = url_for(endpoint, endpoint.url)  # http:// once an insecure endpoint fell back to it
            with self._lock:
                self.bytes[url] = self.bytes.get(url, 0) + n

    def manifest_from(self, endpoint: Endpoint) -> None:
        with self._lock:
            if self.manifest_endpoint is None:
                self.manifest_endpoint = url_for(endpoint, endpoint.url)

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def fell_back(self, endpoint: Endpoint, what: str, reason: str) -> None:
        log.info("%s: %s failed (%s); trying the next endpoint", endpoint.url, what, reason)
        with self._lock:
            self.fallbacks.append(Fallback(endpoint.url, what, reason))


def walk(
    endpoints: list[Endpoint],
    capability: str,
    what: str,
    served: Served,
    attempt: Callable[[Endpoint, bool], _T],
) -> _T:
    """``attempt(endpoint, has_next)`` on each usable endpoint in turn until one succeeds.

    ``has_next`` tells the attempt that a failure will fall back, so it should not
    spend time retrying. The last endpoint's error is raised as it is.
    """
    usable = [ep for ep in endpoints if ep.can(capability)]
    if not usable:
        sources = sorted({ep.source for ep in endpoints if ep.source}) or ["the configuration"]
        raise RegistryError(
            f"no endpoint may {capability} {what}",
            hint=f"give an endpoint the {capability!r} capability in {', '.join(sources)}",
        )
    for position, endpoint in enumerate(usable):
        has_next = position < len(usable) - 1
        if has_next:
            reason = dead_reason(endpoint.url)
            if reason is not None:  # reported once, when it was found dead
                log.debug("%s: skipped for %s (%s earlier in this run)", endpoint.url, what, reason)
                continue
        try:
            return attempt(endpoint, has_next)
        except (RegistryError, IntegrityError, ManifestError) as exc:
            if isinstance(exc, IntegrityError) and endpoint.mirror:
                exc = _blame(exc, endpoint, what)
            if not has_next:
                raise exc
            if isinstance(exc, Unreachable):
                mark_dead(endpoint.url, exc.message)
            served.fell_back(endpoint, what, exc.message)
    raise AssertionError("the last endpoint either returns or raises")


def _blame(exc: IntegrityError, endpoint: Endpoint, what: str) -> IntegrityError:
    """Wrong bytes from a mirror: the error names the mirror (and, from the store, both digests)."""
    named = IntegrityError(
        f"mirror {endpoint.url} served wrong bytes for {what}: {exc.message}",
        hint="the mirror's copy is damaged; nothing from it was stored (with another endpoint configured, "
        "cas fetches the blob from there instead)",
    )
    named.__cause__ = exc
    return named
