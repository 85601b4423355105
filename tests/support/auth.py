"""A small httpx client for the test registries that answers their 401 challenges itself.

Why: the helpers (push, manifest read-back) must work against every auth mode without using
cas's own registry client, which is the code under test. This follows the Docker flow: try
the request, read ``WWW-Authenticate``, then send Basic credentials or fetch a bearer token
from the realm (with Basic credentials when we have them) for the challenge's scope.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Protocol

import httpx

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class Target(Protocol):
    """Anything with a base URL and (maybe) credentials: Registry, FaultProxy."""

    url: str
    username: str | None
    password: str | None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="r",service="s",scope="x"`` -> ("bearer", {"realm": "r", ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}


class RegistryAuth(httpx.Auth):
    """Basic or bearer auth, decided by the registry's challenge; caches tokens per scope."""

    def __init__(self, username: str | None, password: str | None, *, push: bool = False) -> None:
        self.username = username
        self.password = password
        self.push = push
        self._tokens: dict[tuple[str, str], str] = {}
        self._last: tuple[str, str] | None = None  # (scheme, token) of the last success

    def auth_flow(self, request: httpx.Request):
        if self._last is not None and "Authorization" not in request.headers:
            request.headers["Authorization"] = f"{self._last[0]} {self._last[1]}"
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return
        scheme, params = parse_challenge(response.headers["www-authenticate"])
        if scheme == "basic":
            if self.username is None:
                return
            raw = f"{self.username}:{self.password or ''}".encode()
            self._last = ("Basic", base64.b64encode(raw).decode())
            request.headers["Authorization"] = f"Basic {self._last[1]}"
        elif scheme == "bearer":
            scope = params.get("scope", "")
            if self.push and scope.endswith(":pull"):
                scope += ",push"
            token = self._token(params["realm"], params.get("service", ""), scope)
            request.headers["Authorization"] = f"Bearer {token}"
            self._last = ("Bearer", token)
        else:
            return
        yield request

    def _token(self, realm: str, service: str, scope: str) -> str:
        key = (realm, scope)
        if key not in self._tokens:
            params = {"service": service}
            if scope:
                params["scope"] = scope
            auth = (self.username, self.password or "") if self.username is not None else None
            with httpx.Client(trust_env=False, timeout=30) as client:
                resp = client.get(realm, params=params, auth=auth)
            resp.raise_for_status()
            self._tokens[key] = resp.json()["token"]
        return self._tokens[key]


def client(target: Target, *, credentials: bool = True, push: bool = False, **kwargs: Any) -> httpx.Client:
    """An httpx client on ``target.url``; with ``credentials=False`` it is anonymous (bearer
    tokens are still fetched anonymously, as Docker does for public images)."""
    user = getattr(target, "username", None) if credentials else None
    password = getattr(target, "password", None) if credentials else None
    kwargs.setdefault("timeout", 60)
    return httpx.Client(base_url=target.url, auth=RegistryAuth(user, password, push=push), trust_env=False, **kwargs)


def get_manifest(
    target: Target, repository: str, reference: str, *, credentials: bool = True, accept: str = MANIFEST_ACCEPT
) -> httpx.Response:
    """GET a manifest with the full Accept list (without it the registry downgrades to schema1)."""
    with client(target, credentials=credentials) as c:
        return c.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
