import pytest

from cas.errors import BadReference
from cas.reference import parse

H = "a" * 64


@pytest.mark.parametrize(
    "text, canonical, api_host",
    [
        ("alpine", "docker.io/library/alpine:latest", "registry-1.docker.io"),
        ("alpine:3.19", "docker.io/library/alpine:3.19", "registry-1.docker.io"),
        ("docker.io/alpine", "docker.io/library/alpine:latest", "registry-1.docker.io"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "registry-1.docker.io"),
        ("user/app", "docker.io/user/app:latest", "registry-1.docker.io"),
        ("localhost/app", "localhost/app:latest", "localhost"),
        ("localhost:5000/team/app:1.0", "localhost:5000/team/app:1.0", "localhost:5000"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000"),
        ("ghcr.io/o/r@sha256:" + H, "ghcr.io/o/r@sha256:" + H, "ghcr.io"),
        ("ghcr.io/o/r:t@sha256:" + H, "ghcr.io/o/r:t@sha256:" + H, "ghcr.io"),
        ("Registry.Example/app", "Registry.Example/app:latest", "Registry.Example"),
        ("a.b/c__d/e-f.g:x_Y.1", "a.b/c__d/e-f.g:x_Y.1", "a.b"),
    ],
)
def test_parse_normalizes_like_docker(text, canonical, api_host):
    ref = parse(text)
    assert str(ref) == canonical
    assert ref.api_host == api_host


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("Alpine", "lowercase"),
        ("alpine:", "bad tag"),
        ("alpine:-x", "bad tag"),
        ("alpine:\u00e4\u0663", "bad tag"),
        ("alpine@sha256:abc", "64 lowercase hex"),
        ("alpine@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("alpine@sha256:" + "A" * 64, "lowercase hex"),
        ("a b", "whitespace"),
        ("host:5000/", "missing repository"),
        ("foo//bar", "bad repository component"),
        ("-foo", "bad repository component"),
        ("x" * 300, "longer than"),
    ],
)
def test_parse_rejects_with_a_reason(text, fragment):
    with pytest.raises(BadReference) as info:
        parse(text)
    assert fragment in info.value.message


def test_familiar_form():
    assert parse("alpine").familiar == "alpine:latest"
    assert parse("127.0.0.1:5000/x/y:2").familiar == "127.0.0.1:5000/x/y:2"
