"""Registry authentication: WWW-Authenticate parsing (pure) and Basic/Bearer as an ``httpx.Auth``.

One ``RegistryAuth`` lives per RegistryClient and is shared by its threads;
``RegistryAuth.scoped(repository, scopes)`` gives the per-request ``httpx.Auth``;
``scopes`` defaults to pull on ``repository`` (a push asks for
``repository:NAME:pull,push``, plus pull on every repository it mounts from).

The flow for one request:

1. a cached token for the scopes (memory, then the TokenCache) is
   sent pre-emptively, so a warm pull costs one request; so are Basic
   credentials once this registry is known to want Basic;
2. on a 401 the challenge decides: Basic resends with credentials; Bearer gets a
   token from the realm (with Basic credentials when we have some, anonymously
   otherwise), caches it for ``expires_in`` and resends;
3. a 401 after fresh credentials is an AuthError. 403 is mapped by the client.

Credentials are looked up (``lookup_credentials``) only when a challenge
arrives, so anonymous pulls never run a credential helper.

Token cache keys: ``HOST|SCOPE|WHO`` where WHO is a hash of the explicit
username, or of the credential files' paths (docker's config, then podman's auth files) when
the credentials come (or would come) from them: the key must be known before any credential
helper runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Generator
from typing import Protocol

import httpx

from cas.errors import AuthError, RateLimited, RegistryError, ServerError
from cas.registry.credentials import Credentials, config_path, containers_auth_files, lookup_credentials
from cas.registry.retry import Transient, is_retryable_status, parse_retry_after
from cas.registry.wire import error_detail, is_loopback

DEFAULT_EXPIRES_IN = 60.0
BASIC_MEMORY = 24 * 3600.0  # how long "this registry wants Basic" is remembered
LOGIN_HINT = (
    "log in with `cas login {host}` (or `docker login`, `podman login`), or pass --username and --password-stdin"
)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(,|$)', re.DOTALL)
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


class TokenCache(Protocol):
    def get_token(self, key: str) -> str | None: ...
    def put_token(self, key: str, token: str, expires_in: float) -> None: ...


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push"`` ->
    ``("bearer", {"realm": ..., "service": ..., "scope": ...})``.

    The scheme and parameter names are lowercased; quoted values may hold commas
    and backslash escapes. Only the first challenge is read. An empty or
    unparsable header gives ``("", {})``.
    """
    match = _SCHEME.match(header or "")
    if not match:
        return "", {}
    scheme = match.group(1).lower()
    params: dict[str, str] = {}
    pos = match.end()
    while pos < len(header):
        param = _PARAM.match(header, pos)
        if not param:
            break  # a token68, or the next challenge
        name, quoted, bare, _ = param.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params.setdefault(name.lower(), value)
        pos = param.end()
    return scheme, params


def scope_for(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


def merge_scopes(ours: tuple[str, ...], challenged: str | None) -> list[str]:
    """The scopes to ask the token server for: ours, then any other the challenge names.

    A challenge's ``scope`` may list several, space-separated (a mount needs pull on
    its source too); each goes in its own ``scope`` parameter, as Docker's token spec says.
    """
    merged = list(ours)
    for scope in (challenged or "").split():
        if not any(_covers(held, scope) for held in merged):
            merged.append(scope)
    return merged


def _covers(held: str, wanted: str) -> bool:
    """``repository:x:pull,push`` covers ``repository:x:pull``: same resource, no action missing."""
    held_resource, _, held_actions = held.rpartition(":")
    resource, _, actions = wanted.rpartition(":")
    return held_resource == resource and set(actions.split(",")) <= set(held_actions.split(","))


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_token_response(body: bytes) -> tuple[str, float]:
    """``(token, expires_in)`` from a token server's JSON; ``token`` or ``access_token``."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ValueError("the token server's answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise ValueError("the token server's answer is not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("the token server's answer holds no token")
    expires = doc.get("expires_in")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires <= 0:
        expires = DEFAULT_EXPIRES_IN
    return token, float(expires)


def cache_lifetime(expires_in: float) -> float:
    """How long to keep a token: its lifetime less a margin for clock skew and slow requests."""
    return max(1.0, expires_in - min(30.0, expires_in * 0.1))


def token_cache_key(host: str, scope: str, explicit: Credentials | None, config: str) -> str:
    if explicit is not None:
        who = "user:" + _short_hash(explicit.username or explicit.identity_token or "")
    else:
        who = "config:" + _short_hash(config)
    return f"{host}|{scope}|{who}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RegistryAuth:
    """Auth state for one registry host, shared by every request and thread of a client."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        token_cache: TokenCache | None = None,
        lookup: Callable[[str], Credentials | None] = lookup_credentials,
        plain_http: bool = False,
    ) -> None:
        """``plain_http``: the registry is explicitly insecure (or configured as http://), so its
        credentials may cross plain HTTP to another machine; otherwise they never do."""
        self.host = host
        self._plain_http = plain_http
        self._explicit = credentials
        self._creds = credentials
        self._looked_up = credentials is not None
        self._lookup = lookup
        self._cache = token_cache
        files = [config_path(), *containers_auth_files()]  # where a lookup would find who we are
        self._config = "" if credentials is not None else ":".join(map(str, files))
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic: bool | None = None
        self._lock = threading.Lock()
        self._lookup_lock = threading.Lock()  # a helper may take seconds: do not block token reads

    def scoped(self, repository: str, scopes: tuple[str, ...] | None = None) -> httpx.Auth:
        if scopes is None:  # pull on the repository; nothing for the registry itself (GET /v2/, a login's check)
            scopes = (scope_for(repository),) if repository else ()
        return _ScopedAuth(self, repository, scopes)

    # credentials ---------------------------------------------------------
    def credentials(self) -> Credentials | None:
        with self._lookup_lock:
            if not self._looked_up:
                self._creds = self._lookup(self.host)
                self._looked_up = True
            return self._creds

    def _withheld_from(self, url: httpx.URL) -> bool:
        """Credentials and tokens cross plain HTTP only to loopback, or for a registry marked insecure."""
        return url.scheme == "http" and not self._plain_http and not is_loopback(url.host)

    def _refuse_plain(self, url: httpx.URL) -> None:
        if self._withheld_from(url):
            raise AuthError(
                f"not sending credentials for {self.host} over plain HTTP to {url.netloc.decode()}",
                hint=f"ask for HTTPS there, or mark {self.host} insecure (--insecure, registries.conf, "
                "daemon.json insecure-registries) if you trust the network",
            )

    # tokens --------------------------------------------------------------
    def _key(self, scope: str) -> str:
        return token_cache_key(self.host, scope, self._explicit, self._config)

    def cached_token(self, scope: str) -> str | None:
        key = self._key(scope)
        with self._lock:
            held = self._tokens.get(key)
            if held and held[1] > time.monotonic():
                return held[0]
        token = self._cache.get_token(key) if self._cache is not None else None
        if token:
            with self._lock:
                # The cache's own expiry governs; remember it briefly in memory.
                self._tokens[key] = (token, time.monotonic() + DEFAULT_EXPIRES_IN / 2)
        return token or None

    def _store_token(self, scope: str, token: str, expires_in: float) -> None:
        key, keep = self._key(scope), cache_lifetime(expires_in)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + keep)
        if self._cache is not None:
            self._cache.put_token(key, token, keep)

    def _drop_token(self, scope: str, token: str) -> None:
        key = self._key(scope)
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]
        if self._cache is not None and self._cache.get_token(key) == token:
            self._cache.put_token(key, "", 0)  # the protocol has no delete: an empty token is a miss

    # basic ---------------------------------------------------------------
    def wants_basic(self) -> bool:
        if self._basic is None:
            self._basic = bool(self._cache is not None and self._cache.get_token(f"{self.host}|basic"))
        return self._basic

    def _remember_basic(self) -> None:
        if not self._basic and self._cache is not None:
            self._cache.put_token(f"{self.host}|basic", "1", BASIC_MEMORY)
        self._basic = True

    # the flow ------------------------------------------------------------
    def flow(
        self, request: httpx.Request, repository: str, scopes: tuple[str, ...]
    ) -> Generator[httpx.Request, httpx.Response, None]:
        scope = " ".join(scopes)
        plain = self._withheld_from(request.url)
        sent_token = None if plain else self.cached_token(scope)
        if sent_token:
            request.headers["Authorization"] = f"Bearer {sent_token}"
        elif self.wants_basic() and not plain:
            creds = self.credentials()
            if creds is not None and creds.has_basic:
                request.headers["Authorization"] = basic_header(creds)
        response = yield request
        if response.status_code != 401:
            return
        self._refuse_plain(request.url)
        if sent_token:
            self._drop_token(scope, sent_token)
        scheme, params = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            yield from self._basic_flow(request, response)
        elif scheme == "bearer":
            yield from self._bearer_flow(request, params, repository, scopes, sent_token)
        else:
            raise AuthError(
                f"registry {self.host} asks for unsupported authentication {scheme or '(none given)'!r}",
                hint="cas supports Basic and Bearer token authentication",
            )

    def _basic_flow(
        self, request: httpx.Request, response: httpx.Response
    ) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self.credentials()
        if creds is None or not creds.has_basic:
            raise AuthError(f"registry {self.host} requires authentication", hint=LOGIN_HINT.format(host=self.host))
        if request.headers.get("Authorization") == basic_header(creds):
            self._fail(response, creds)  # we sent these pre-emptively and they were refused
        self._remember_basic()
        request.headers["Authorization"] = basic_header(creds)
        response = yield request
        if response.status_code == 401:
            self._fail(response, creds)

    def _bearer_flow(
        self,
        request: httpx.Request,
        params: dict[str, str],
        repository: str,
        scopes: tuple[str, ...],
        sent_token: str | None,
    ) -> Generator[httpx.Request, httpx.Response, None]:
        scope = " ".join(scopes)
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.host} sent a Bearer challenge without a realm")
        # No lock is held across the yield: a generator httpx abandons must never keep one.
        token = self.cached_token(scope)
        if not token or token == sent_token:  # no other thread fetched one meanwhile
            wanted = merge_scopes(scopes, params.get("scope"))
            token_request = self._token_request(realm, params.get("service"), wanted)
            token_request.extensions["timeout"] = request.extensions.get("timeout", {})  # else it may wait forever
            token_response = yield token_request
            token_response.read()
            token, expires_in = self._token_from(token_response, repository)
            self._store_token(scope, token, expires_in)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self._drop_token(scope, token)
            self._fail(response, self.credentials(), maybe_missing=True)

    def _token_request(self, realm: str, service: str | None, scopes: list[str]) -> httpx.Request:
        creds = self.credentials()
        if creds is not None and (creds.identity_token or creds.has_basic):
            self._refuse_plain(httpx.URL(realm))
        first = {"service": service} if service else {}
        if creds is not None and creds.identity_token:  # OAuth2: one space-separated scope field
            form = dict(first, scope=" ".join(scopes), grant_type="refresh_token", client_id="cas")
            form["refresh_token"] = creds.identity_token
            return httpx.Request("POST", realm, data=form)
        query = [*first.items(), *(("scope", s) for s in scopes)]
        headers = {}
        if creds is not None and creds.has_basic:
            headers["Authorization"] = basic_header(creds)
            query.append(("account", creds.username or ""))
        return httpx.Request("GET", realm, params=query, headers=headers)

    def _token_from(self, response: httpx.Response, repository: str) -> tuple[str, float]:
        status = response.status_code
        where = f"token server {response.request.url.netloc.decode()} for {self.host}"
        if status == 401:
            self._fail(response, self.credentials())
        if status == 403:
            _, detail = error_detail(response.content)
            raise AuthError(
                f"access denied to {repository} on {self.host}" + (f": {detail}" if detail else ""),
                hint=f"check that your account may access {repository}; `cas login {self.host}` to change accounts",
            )
        if is_retryable_status(status):
            kind = RateLimited if status == 429 else ServerError
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise Transient(kind(f"{where} answered {status}", hint="try again later"), retry_after)
        if status != 200:
            _, detail = error_detail(response.content)
            raise RegistryError(f"{where} answered {status}: {detail}")
        try:
            return parse_token_response(response.content)
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}") from exc

    def _fail(self, response: httpx.Response, creds: Credentials | None, *, maybe_missing: bool = False) -> None:
        _, detail = error_detail(response.read())
        if creds is None:
            hint = LOGIN_HINT.format(host=self.host)
            if maybe_missing:  # Docker Hub answers an anonymous token for a missing repository this way
                hint = f"the repository may not exist, or it is private: {hint}"
        else:
            hint = f"check the username and password, then `cas login {self.host}` again"
        raise AuthError(f"authentication failed for {self.host}: {detail or response.status_code}", hint=hint)


class _ScopedAuth(httpx.Auth):
    def __init__(self, state: RegistryAuth, repository: str, scopes: tuple[str, ...]) -> None:
        self._state = state
        self._repository = repository
        self._scopes = scopes

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self._state.flow(request, self._repository, self._scopes)
