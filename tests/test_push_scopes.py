"""Token scopes for a push: pure helpers of cas.registry.auth, and the token request they build."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from cas.registry.auth import RegistryAuth, merge_scopes, scope_for
from cas.registry.credentials import Credentials


@pytest.mark.parametrize(
    ("ours", "challenged", "merged"),
    [
        (("repository:a:pull",), "repository:a:pull", ["repository:a:pull"]),
        (("repository:a:pull,push",), "repository:a:pull", ["repository:a:pull,push"]),
        (("repository:a:pull",), "repository:a:pull,push", ["repository:a:pull", "repository:a:pull,push"]),
        (
            ("repository:a:pull,push",),
            "repository:a:pull,push repository:b:pull",
            ["repository:a:pull,push", "repository:b:pull"],
        ),
        (("repository:a:pull",), None, ["repository:a:pull"]),
        (("repository:a:pull",), "repository:ab:pull", ["repository:a:pull", "repository:ab:pull"]),
    ],
)
def test_merge_scopes_keeps_ours_and_adds_only_what_they_do_not_cover(ours, challenged, merged):
    assert merge_scopes(ours, challenged) == merged


def test_scope_for_push():
    assert scope_for("team/app", "pull,push") == "repository:team/app:pull,push"


def test_each_scope_is_its_own_query_parameter():
    state = RegistryAuth("reg.example", credentials=Credentials("alice", "pw"))
    request = state._token_request("https://auth.example/token", "svc", ["repository:a:pull,push", "repository:b:pull"])
    query = parse_qs(request.url.query.decode())
    assert query == {
        "service": ["svc"],
        "scope": ["repository:a:pull,push", "repository:b:pull"],
        "account": ["alice"],
    }
    assert request.headers["Authorization"].startswith("Basic ")


def test_an_identity_token_sends_the_scopes_space_separated():
    state = RegistryAuth("reg.example", credentials=Credentials(identity_token="refresh"))
    request = state._token_request("https://auth.example/token", "svc", ["repository:a:pull,push", "repository:b:pull"])
    form = parse_qs(request.read().decode())
    assert form["scope"] == ["repository:a:pull,push repository:b:pull"]
    assert form["grant_type"] == ["refresh_token"]
