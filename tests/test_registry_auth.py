"""Auth: WWW-Authenticate parsing and the Basic/Bearer flow, against an in-memory transport.

The real registry and token server prove the same flows end to end in
test_registry_client.py; here each branch of the flow is pinned cheaply.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest
from support.fakes import DictTokenCache

from cas.errors import AuthError, ServerError
from cas.registry.auth import (
    RegistryAuth,
    cache_lifetime,
    parse_token_response,
    parse_www_authenticate,
    scope_for,
    token_cache_key,
)
from cas.registry.credentials import Credentials
from cas.registry.retry import Transient

HOST = "reg.example"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
            (
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/alpine:pull",
                },
            ),
        ),
        (
            'Bearer realm="https://a/token", scope="repository:x:pull,push", service="svc"',
            ("bearer", {"realm": "https://a/token", "scope": "repository:x:pull,push", "service": "svc"}),
        ),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        ("BASIC REALM=plain", ("basic", {"realm": "plain"})),
        (
            'Bearer realm="a \\"quoted\\" realm",error="invalid_token"',
            ("bearer", {"realm": 'a "quoted" realm', "error": "invalid_token"}),
        ),
        ('Bearer realm = "spaced" , service = svc', ("bearer", {"realm": "spaced", "service": "svc"})),
        ("Bearer", ("bearer", {})),
        ("", ("", {})),
        ("   ", ("", {})),
        ('Bearer realm="r", Basic realm="second"', ("bearer", {"realm": "r"})),  # first challenge only
        ('Bearer realm="r",realm="dup"', ("bearer", {"realm": "r"})),  # first value wins
        (
            'Bearer realm="https://x/t?a=1,b=2",service="s"',
            ("bearer", {"realm": "https://x/t?a=1,b=2", "service": "s"}),
        ),
    ],
)
def test_parse_www_authenticate(header, expected):
    assert parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"token": "t1", "expires_in": 300}, ("t1", 300.0)),
        ({"access_token": "t2"}, ("t2", 60.0)),
        ({"token": "t3", "access_token": "ignored", "expires_in": 0}, ("t3", 60.0)),
        ({"token": "t4", "expires_in": "soon"}, ("t4", 60.0)),
        ({"token": "t5", "expires_in": True}, ("t5", 60.0)),
        ({"token": "t6", "expires_in": 12.5}, ("t6", 12.5)),
    ],
)
def test_parse_token_response(body, expected):
    assert parse_token_response(json.dumps(body).encode()) == expected


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"token": ""}', b'{"token": 5}'])
def test_parse_token_response_rejects(body):
    with pytest.raises(ValueError):
        parse_token_response(body)


@pytest.mark.parametrize(("expires_in", "kept"), [(60, 54.0), (300, 270.0), (3600, 3570.0), (1, 1.0), (0.5, 1.0)])
def test_cache_lifetime_keeps_a_margin(expires_in, kept):
    assert cache_lifetime(expires_in) == pytest.approx(kept)


def test_token_cache_keys():
    scope = scope_for("team/app")
    assert scope == "repository:team/app:pull"
    alice = token_cache_key(HOST, scope, Credentials("alice", "pw"), "")
    bob = token_cache_key(HOST, scope, Credentials("bob", "pw"), "")
    ambient = token_cache_key(HOST, scope, None, "/home/x/.docker/config.json")
    other_config = token_cache_key(HOST, scope, None, "/tmp/other/config.json")
    assert len({alice, bob, ambient, other_config}) == 4
    assert alice.startswith(f"{HOST}|{scope}|") and "alice" not in alice
    assert token_cache_key(HOST, scope_for("other"), Credentials("alice", "pw"), "") != alice
    assert token_cache_key("other.example", scope, Credentials("alice", "pw"), "") != alice


# --- the flow, against an in-memory registry ---------------------------------------------------


class FakeRegistry:
    """A registry that wants Basic or Bearer, and a token server, in one MockTransport."""

    def __init__(
        self,
        mode: str,
        *,
        user: str = "alice",
        password: str = "pw",
        anonymous: bool = True,
        token_status: int = 200,
        token_key: str = "token",
        realm: str = "https://auth.example/token",
    ) -> None:
        self.mode, self.user, self.password, self.anonymous = mode, user, password, anonymous
        self.realm = realm
        self.token_status, self.token_key = token_status, token_key
        self.log: list[httpx.Request] = []
        self.issued: list[str] = []
        self.revoked: set[str] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        # A copy: the auth flow resends the same Request object with new headers.
        self.log.append(
            httpx.Request(request.method, request.url, headers=request.headers.copy(), content=request.content)
        )
        if request.url.path == "/token":
            return self._token(request)
        auth = request.headers.get("Authorization", "")
        if self.mode == "basic":
            if auth == self._basic():
                return httpx.Response(200, text="ok")
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Basic realm="r"'},
                json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            )
        token = auth.removeprefix("Bearer ")
        if auth.startswith("Bearer ") and token in self.issued and token not in self.revoked:
            return httpx.Response(200, text="ok")
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": f'Bearer realm="{self.realm}",service="svc",scope="{scope_for("app")}"'},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def _token(self, request: httpx.Request) -> httpx.Response:
        if self.token_status != 200:
            return httpx.Response(self.token_status, headers={"Retry-After": "1"}, text="busy")
        auth = request.headers.get("Authorization")
        if request.method == "POST":
            form = parse_qs(request.content.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != ["refresh"]:
                return httpx.Response(401, json={"details": "bad refresh token"})
        elif auth is None and not self.anonymous:
            return httpx.Response(401, json={"details": "anonymous access denied"})
        elif auth is not None and auth != self._basic():
            return httpx.Response(401, json={"details": "incorrect username or password"})
        token = f"tok{len(self.issued)}"
        self.issued.append(token)
        return httpx.Response(200, json={self.token_key: token, "expires_in": 300})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.log]


def fetch(registry: FakeRegistry, state: RegistryAuth, repo: str = "app", scheme: str = "https") -> httpx.Response:
    with httpx.Client(transport=httpx.MockTransport(registry.handler)) as client:
        return client.get(f"{scheme}://{HOST}/v2/{repo}/manifests/latest", auth=state.scoped(repo))


def never_looked_up(host: str):
    raise AssertionError(f"credentials looked up for {host} without a challenge")


def test_bearer_anonymous_then_cached_token_is_sent_preemptively():
    registry, cache = FakeRegistry("bearer"), DictTokenCache()
    state = RegistryAuth(HOST, token_cache=cache, lookup=lambda host: None)
    assert fetch(registry, state).status_code == 200
    assert registry.paths() == ["/v2/app/manifests/latest", "/token", "/v2/app/manifests/latest"]
    token_request = registry.log[1]
    assert "Authorization" not in token_request.headers
    assert parse_qs(token_request.url.query.decode()) == {"service": ["svc"], "scope": [scope_for("app")]}
    [(key, token, kept)] = cache.puts
    assert token == "tok0" and kept == pytest.approx(270.0)

    # A warm run (a new process: fresh state, same persistent cache) costs exactly one request.
    registry.log.clear()
    warm = RegistryAuth(HOST, token_cache=cache, lookup=never_looked_up)
    assert fetch(registry, warm).status_code == 200
    assert registry.paths() == ["/v2/app/manifests/latest"]
    assert registry.log[0].headers["Authorization"] == "Bearer tok0"


def test_bearer_access_token_field_is_accepted():
    registry = FakeRegistry("bearer", token_key="access_token")
    assert fetch(registry, RegistryAuth(HOST, lookup=lambda host: None)).status_code == 200


def test_bearer_with_credentials_sends_basic_to_the_token_server():
    registry = FakeRegistry("bearer", anonymous=False)
    state = RegistryAuth(HOST, credentials=Credentials("alice", "pw"))
    assert fetch(registry, state).status_code == 200
    token_request = registry.log[1]
    assert token_request.headers["Authorization"] == registry._basic()
    assert parse_qs(token_request.url.query.decode())["account"] == ["alice"]


def test_bearer_credentials_are_looked_up_lazily_once():
    registry = FakeRegistry("bearer", anonymous=False)
    calls = []
    state = RegistryAuth(HOST, lookup=lambda host: calls.append(host) or Credentials("alice", "pw"))
    assert fetch(registry, state).status_code == 200
    assert fetch(registry, state, repo="other").status_code == 200
    assert calls == [HOST]


def test_no_challenge_no_lookup():
    def open_registry(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="public")

    state = RegistryAuth(HOST, token_cache=DictTokenCache(), lookup=never_looked_up)
    with httpx.Client(transport=httpx.MockTransport(open_registry)) as client:
        assert client.get(f"https://{HOST}/v2/app/manifests/1", auth=state.scoped("app")).status_code == 200


def test_bearer_identity_token_uses_the_refresh_grant():
    registry = FakeRegistry("bearer", anonymous=False)
    state = RegistryAuth(HOST, credentials=Credentials(identity_token="refresh"))
    assert fetch(registry, state).status_code == 200
    assert registry.log[1].method == "POST"


def test_bearer_bad_password_is_an_auth_error():
    registry = FakeRegistry("bearer", anonymous=False)
    state = RegistryAuth(HOST, credentials=Credentials("alice", "wrong"))
    with pytest.raises(AuthError) as info:
        fetch(registry, state)
    assert info.value.message == f"authentication failed for {HOST}: incorrect username or password"
    assert "username and password" in info.value.hint


def test_bearer_anonymous_denied_hints_at_login():
    registry = FakeRegistry("bearer", anonymous=False)
    with pytest.raises(AuthError) as info:
        fetch(registry, RegistryAuth(HOST, lookup=lambda host: None))
    assert "cas login reg.example" in info.value.hint and "--password-stdin" in info.value.hint


def test_bearer_401_after_a_fresh_token_is_an_auth_error():
    registry = FakeRegistry("bearer")
    registry.revoked = {"tok0"}  # the registry refuses what the token server just issued
    with pytest.raises(AuthError) as info:
        fetch(registry, RegistryAuth(HOST, lookup=lambda host: None))
    assert info.value.message.startswith(f"authentication failed for {HOST}: authentication required")
    assert registry.paths().count("/token") == 1


def test_a_stale_cached_token_is_replaced():
    registry, cache = FakeRegistry("bearer"), DictTokenCache()
    state = RegistryAuth(HOST, token_cache=cache, lookup=lambda host: None)
    fetch(registry, state)
    registry.revoked.add("tok0")  # expired server-side before the cache forgot it
    registry.log.clear()
    fresh = RegistryAuth(HOST, token_cache=cache, lookup=lambda host: None)
    assert fetch(registry, fresh).status_code == 200
    assert registry.paths() == ["/v2/app/manifests/latest", "/token", "/v2/app/manifests/latest"]
    assert registry.log[0].headers["Authorization"] == "Bearer tok0"
    assert set(cache.tokens.values()) == {"tok1"}


def test_token_server_trouble_is_transient():
    registry = FakeRegistry("bearer", token_status=503)
    with pytest.raises(Transient) as info:
        fetch(registry, RegistryAuth(HOST, lookup=lambda host: None))
    assert isinstance(info.value.final, ServerError)
    assert info.value.retry_after == 1.0


def test_basic_flow_and_preemptive_basic_next_time():
    registry, cache = FakeRegistry("basic"), DictTokenCache()
    state = RegistryAuth(HOST, credentials=Credentials("alice", "pw"), token_cache=cache)
    assert fetch(registry, state).status_code == 200
    assert registry.paths() == ["/v2/app/manifests/latest"] * 2
    registry.log.clear()
    assert fetch(registry, state).status_code == 200
    assert len(registry.log) == 1
    registry.log.clear()
    again = RegistryAuth(HOST, credentials=Credentials("alice", "pw"), token_cache=cache)  # a new process
    assert fetch(registry, again).status_code == 200
    assert len(registry.log) == 1


def test_basic_without_credentials_hints_at_login():
    with pytest.raises(AuthError) as info:
        fetch(FakeRegistry("basic"), RegistryAuth(HOST, lookup=lambda host: None))
    assert info.value.message == f"registry {HOST} requires authentication"
    assert (
        info.value.hint
        == f"log in with `cas login {HOST}` (or `docker login`, `podman login`), or pass --username and --password-stdin"
    )


def test_basic_bad_password_is_an_auth_error():
    with pytest.raises(AuthError) as info:
        fetch(FakeRegistry("basic"), RegistryAuth(HOST, credentials=Credentials("alice", "nope")))
    assert info.value.message == f"authentication failed for {HOST}: authentication required"


def test_unknown_scheme_is_an_auth_error():
    def negotiate(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})

    with httpx.Client(transport=httpx.MockTransport(negotiate)) as client, pytest.raises(AuthError) as info:
        client.get(f"https://{HOST}/v2/", auth=RegistryAuth(HOST, lookup=lambda h: None).scoped("app"))
    assert "'negotiate'" in info.value.message


def test_token_server_403_is_access_denied():
    registry = FakeRegistry("bearer", token_status=403)
    with pytest.raises(AuthError) as info:
        fetch(registry, RegistryAuth(HOST, lookup=lambda host: None))
    assert info.value.message == f"access denied to app on {HOST}: busy"


# --- credentials and plain HTTP ---------------------------------------------------------------------------


def test_credentials_never_go_to_a_plain_http_token_realm_unless_the_registry_is_insecure():
    registry = FakeRegistry("bearer", anonymous=False, realm="http://auth.example/token")
    with pytest.raises(AuthError) as info:
        fetch(registry, RegistryAuth(HOST, credentials=Credentials("alice", "pw")))
    assert "over plain HTTP to auth.example" in info.value.message and "insecure" in info.value.hint
    assert registry.paths() == ["/v2/app/manifests/latest"]  # the password never left

    marked = RegistryAuth(HOST, credentials=Credentials("alice", "pw"), plain_http=True)
    assert fetch(registry, marked).status_code == 200
    assert registry.log[-2].headers["Authorization"] == registry._basic()


def test_credentials_never_go_to_a_plain_http_registry_unless_it_is_insecure():
    registry = FakeRegistry("basic")
    with pytest.raises(AuthError):
        fetch(registry, RegistryAuth(HOST, credentials=Credentials("alice", "pw")), scheme="http")
    assert [r.headers.get("Authorization") for r in registry.log] == [None]
    marked = RegistryAuth(HOST, credentials=Credentials("alice", "pw"), plain_http=True)
    assert fetch(registry, marked, scheme="http").status_code == 200
    assert registry.log[-1].headers["Authorization"] == registry._basic()
