"""The endpoint walk on its own: which endpoints are tried, what falls back, what is remembered. Pure."""

from __future__ import annotations

import pytest

from cas.errors import AuthError, DigestMismatch, DiskFull, IntegrityError, NotFound, RegistryError, Unreachable
from cas.registry import walk as walk_module
from cas.registry.endpoints import PULL, RESOLVE, Endpoint
from cas.registry.walk import Served, walk


def ep(url: str, *caps: str, mirror: bool = True, source: str = "/etc/containerd/certs.d/r/hosts.toml") -> Endpoint:
    return Endpoint(url, url + "/v2", "app", frozenset(caps or (PULL, RESOLVE)), mirror=mirror, source=source)


MIRROR_A = ep("http://a:5000")
MIRROR_B = ep("http://b:5000", PULL)
UPSTREAM = ep("https://r.example", mirror=False)


@pytest.fixture(autouse=True)
def fresh_memory():
    walk_module.forget_dead()
    yield
    walk_module.forget_dead()


def run(endpoints, outcomes: dict[str, Exception | str], capability=PULL, served=None):
    tried = []

    def attempt(endpoint, has_next):
        tried.append((endpoint.url, has_next))
        outcome = outcomes[endpoint.url]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    served = served or Served()
    return walk(endpoints, capability, "blob sha256:x", served, attempt), tried, served


def test_the_first_endpoint_that_answers_wins():
    value, tried, served = run([MIRROR_A, MIRROR_B, UPSTREAM], {"http://a:5000": "from a"})
    assert value == "from a" and tried == [("http://a:5000", True)] and served.fallbacks == []


@pytest.mark.parametrize(
    "error",
    [NotFound("blob x not found"), AuthError("denied"), RegistryError("answered 500"), Unreachable("refused")],
)
def test_a_mirror_failure_falls_back_and_is_reported(error):
    value, tried, served = run([MIRROR_A, UPSTREAM], {"http://a:5000": error, "https://r.example": "up"})
    assert value == "up" and [t[0] for t in tried] == ["http://a:5000", "https://r.example"]
    assert [(f.endpoint, f.what, f.reason) for f in served.fallbacks] == [
        ("http://a:5000", "blob sha256:x", error.message)
    ]


def test_the_last_endpoints_error_is_raised_as_it_is():
    error = NotFound("image not found")
    with pytest.raises(NotFound) as info:
        run([MIRROR_A, UPSTREAM], {"http://a:5000": NotFound("nope"), "https://r.example": error})
    assert info.value is error


def test_errors_that_are_not_the_registrys_never_fall_back():
    with pytest.raises(DiskFull):
        run([MIRROR_A, UPSTREAM], {"http://a:5000": DiskFull("no space"), "https://r.example": "up"})


def test_an_unreachable_mirror_is_skipped_for_the_rest_of_the_process():
    run([MIRROR_A, UPSTREAM], {"http://a:5000": Unreachable("connection refused"), "https://r.example": "up"})
    value, tried, served = run([MIRROR_A, UPSTREAM], {"https://r.example": "up again"})
    assert value == "up again" and tried == [("https://r.example", False)]
    assert served.fallbacks == []  # it was reported when it was found dead


def test_a_dead_last_endpoint_is_still_tried():
    walk_module.mark_dead("https://r.example", "refused")
    assert run([MIRROR_A, UPSTREAM], {"http://a:5000": NotFound("x"), "https://r.example": "up"})[0] == "up"


def test_a_404_does_not_make_a_mirror_dead():
    run([MIRROR_A, UPSTREAM], {"http://a:5000": NotFound("x"), "https://r.example": "up"})
    assert run([MIRROR_A, UPSTREAM], {"http://a:5000": "a again"})[0] == "a again"


def test_wrong_bytes_from_a_mirror_name_the_mirror_and_both_digests():
    mismatch = DigestMismatch("sha256:" + "a" * 64, "sha256:" + "b" * 64)
    _, _, served = run([MIRROR_A, UPSTREAM], {"http://a:5000": mismatch, "https://r.example": "up"})
    reason = served.fallbacks[0].reason
    assert reason.startswith("mirror http://a:5000 served wrong bytes for blob sha256:x: ")
    assert "a" * 64 in reason and "b" * 64 in reason
    with pytest.raises(IntegrityError, match="mirror http://a:5000 served wrong bytes"):
        run([MIRROR_A], {"http://a:5000": mismatch})
    with pytest.raises(DigestMismatch):  # the upstream's own wrong bytes keep their error
        run([UPSTREAM], {"https://r.example": mismatch})


def test_only_endpoints_with_the_capability_are_tried():
    outcomes = {"http://a:5000": NotFound("x"), "http://b:5000": "b", "https://r.example": "up"}
    _, tried, _ = run([MIRROR_A, MIRROR_B, UPSTREAM], outcomes, capability=RESOLVE)
    assert [t[0] for t in tried] == ["http://a:5000", "https://r.example"]  # b may not resolve tags
    with pytest.raises(RegistryError) as info:
        run([MIRROR_B], {}, capability=RESOLVE)
    assert info.value.message == "no endpoint may resolve blob sha256:x"
    assert "/etc/containerd/certs.d/r/hosts.toml" in info.value.hint


def test_served_counts_bytes_per_endpoint_and_the_first_manifest():
    served = Served()
    served.add(MIRROR_A, 10)
    served.add(MIRROR_A, -4)  # a rollback is not traffic
    served.add(UPSTREAM, 5)
    served.manifest_from(UPSTREAM)
    served.manifest_from(MIRROR_A)
    assert served.bytes == {"http://a:5000": 10, "https://r.example": 5}
    assert served.manifest_endpoint == "https://r.example"
