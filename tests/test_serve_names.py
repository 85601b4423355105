"""cas serve's pure parts: the name mapping, Accept negotiation, paging, --listen and exposure."""

from __future__ import annotations

import re

import pytest

from cas.errors import UsageError
from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Platform
from cas.serve import negotiate
from cas.serve.content import page
from cas.serve.errcode import ServeError
from cas.serve.names import map_name, parse_upstreams
from cas.serve.server import ServeOptions, check_exposure, parse_listen

ALIASES = {"lab": "127.0.0.1:5000", "corp": "registry.corp.example"}


@pytest.mark.parametrize(
    ("path", "ns", "expected"),
    [
        # ?ns= first: containerd's mirror requests name the upstream there
        ("library/alpine", "docker.io", "docker.io/library/alpine"),
        ("alpine", "docker.io", "docker.io/library/alpine"),
        ("org/tool", "ghcr.io", "ghcr.io/org/tool"),
        ("app", "127.0.0.1:5000", "127.0.0.1:5000/app"),
        ("lab/app", "127.0.0.1:6000", "127.0.0.1:6000/lab/app"),  # ns wins over an alias
        ("app", "index.docker.io", "docker.io/library/app"),
        ("app", "registry-1.docker.io", "docker.io/library/app"),
        # then an alias as the first component
        ("lab/app", None, "127.0.0.1:5000/app"),
        ("lab/team/app", None, "127.0.0.1:5000/team/app"),
        ("corp/app", None, "registry.corp.example/app"),
        # then a first component that is a host
        ("ghcr.io/org/tool", None, "ghcr.io/org/tool"),
        ("localhost/app", None, "localhost/app"),
        ("localhost:5000/app", None, "localhost:5000/app"),
        # else docker.io, library/ for one-part names
        ("alpine", None, "docker.io/library/alpine"),
        ("lab", None, "docker.io/library/lab"),  # an alias alone names no repository
        ("bitnami/redis", None, "docker.io/bitnami/redis"),
        ("docker.io/library/alpine", None, "docker.io/library/alpine"),
    ],
)
def test_map_name(path, ns, expected):
    assert str(map_name(path, ns, ALIASES)) == expected


@pytest.mark.parametrize(
    ("path", "ns"),
    [
        ("../etc/passwd", None),
        ("app/../../x", None),
        ("a//b", None),
        ("UPPER/case", None),
        ("", None),
        ("a" * 256, None),
        ("ghcr.io/" + "a" * 250, None),
        ("app", "bad host!"),
        ("app", "nodot"),  # a ns without a dot, a port or localhost is no host
        ("lab/", None),
    ],
)
def test_map_name_refuses(path, ns):
    with pytest.raises(ServeError) as caught:
        map_name(path, ns, ALIASES)
    assert caught.value.code == "NAME_INVALID" and caught.value.status == 400


def test_name_ref_tells_tags_from_digests():
    name = map_name("lab/app", None, ALIASES)
    assert name.ref("1.0") == "127.0.0.1:5000/app:1.0"
    assert name.ref("sha256:" + "a" * 64) == "127.0.0.1:5000/app@sha256:" + "a" * 64


def test_parse_upstreams():
    assert parse_upstreams(["lab=127.0.0.1:5000", "hub=docker.io"]) == {"lab": "127.0.0.1:5000", "hub": "docker.io"}
    for bad in ("lab", "=127.0.0.1:5000", "lab=", "a/b=127.0.0.1:5000", "lab=nodot", "lab=bad host"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):  # names the bad one (the caller adds where from)
            parse_upstreams([bad])


ALL = frozenset({OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST})


@pytest.mark.parametrize(
    ("stored", "accept", "by_tag", "expected"),
    [
        (OCI_MANIFEST, ALL, True, negotiate.SERVE),
        (DOCKER_LIST, ALL, True, negotiate.SERVE),
        (DOCKER_LIST, frozenset({DOCKER_MANIFEST}), True, negotiate.CHILD),
        (OCI_INDEX, frozenset({OCI_MANIFEST}), True, negotiate.CHILD),
        (DOCKER_MANIFEST, frozenset({DOCKER_MANIFEST}), True, negotiate.SERVE),
        (DOCKER_MANIFEST, frozenset(), False, negotiate.SERVE),  # by digest: the exact bytes
        (OCI_MANIFEST, frozenset({"*/*"}), True, negotiate.SERVE),
    ],
)
def test_decide(stored, accept, by_tag, expected):
    assert negotiate.decide(stored, accept, by_tag=by_tag) == expected


@pytest.mark.parametrize(
    ("stored", "accept", "by_tag", "says"),
    [
        (OCI_MANIFEST, frozenset({DOCKER_MANIFEST}), True, "OCI manifest found"),
        (OCI_MANIFEST, frozenset({DOCKER_MANIFEST}), False, "OCI manifest found"),
        (DOCKER_MANIFEST, frozenset(), True, "Docker schema 2 manifest found"),
        (DOCKER_LIST, frozenset(), False, "Docker manifest list found"),
    ],
)
def test_decide_refuses_with_a_reason(stored, accept, by_tag, says):
    with pytest.raises(ServeError) as caught:
        negotiate.decide(stored, accept, by_tag=by_tag)
    assert caught.value.code == "MANIFEST_UNKNOWN" and says in caught.value.message


def test_accepted_reads_every_header_and_drops_parameters():
    headers = [f"{OCI_MANIFEST};q=0.9, {DOCKER_MANIFEST}", DOCKER_LIST]
    assert negotiate.accepted(headers) == {OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_LIST}


def test_client_platform_from_user_agent():
    docker = "docker/20.10.24 go/go1.19.8 git-commit/5d6db84 kernel/6.1 os/linux arch/arm64 UpstreamClient(Go-http-client/1.1)"
    assert negotiate.client_platform(docker) == Platform("linux", "arm64")
    assert negotiate.client_platform("skopeo/1.9") == Platform("linux", "amd64")
    assert negotiate.client_platform(None) == Platform("linux", "amd64")


@pytest.mark.parametrize(
    ("n", "last", "shown", "more"),
    [
        (None, None, ["a", "b", "c", "d"], False),
        (2, None, ["a", "b"], True),
        (2, "b", ["c", "d"], False),
        (3, "a", ["b", "c", "d"], False),
        (0, None, [], True),
        (None, "d", [], False),
        (5, "aa", ["b", "c", "d"], False),
    ],
)
def test_page(n, last, shown, more):
    assert page(["a", "b", "c", "d"], n, last) == (shown, more)


def test_parse_listen():
    assert parse_listen("127.0.0.1:5050") == ("127.0.0.1", 5050)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("5050", "127.0.0.1", ":5050", "host:port", "h:70000"):
        with pytest.raises(UsageError, match="is not HOST:PORT"):
            parse_listen(bad)


def test_non_loopback_needs_a_decision():
    check_exposure(ServeOptions(host="127.0.0.1"))
    check_exposure(ServeOptions(host="::1"))
    check_exposure(ServeOptions(host="localhost"))
    check_exposure(ServeOptions(host="0.0.0.0", allow_anonymous=True))
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(UsageError, match="not a loopback address"):
            check_exposure(ServeOptions(host=host))
