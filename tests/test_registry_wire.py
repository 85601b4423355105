"""Wire-format helpers and transport-error descriptions: pure."""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest

from cas.registry.failures import describe_transport_error
from cas.registry.transport import proxy_for
from cas.registry.wire import error_detail, is_loopback, parse_content_range


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("128.0.0.1:5000", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
        ("10.0.0.1:5000", False),
        ("127.attacker.example", False),  # a name, not an address: TLS like any other
        ("127.0.0.1.nip.io:5000", False),
        ("::1", True),  # httpx's URL.host has no brackets
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            json.dumps(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "x"}}]}
            ),
            ("MANIFEST_UNKNOWN", "manifest unknown"),
        ),
        (
            json.dumps({"errors": [{"code": "DENIED", "message": "a"}, {"code": "UNAUTHORIZED", "message": "b"}]}),
            ("DENIED", "a; b"),
        ),
        (json.dumps({"errors": [{"code": "BLOB_UNKNOWN"}]}), ("BLOB_UNKNOWN", "BLOB_UNKNOWN")),
        (json.dumps({"details": "incorrect username or password"}), (None, "incorrect username or password")),
        ("<html>\n  <b>Bad   Gateway</b>\n</html>", (None, "<html> <b>Bad Gateway</b> </html>")),
        ("", (None, "")),
        (json.dumps({"errors": "nope"}), (None, '{"errors": "nope"}')),
    ],
)
def test_error_detail(body, expected):
    assert error_detail(body.encode()) == expected


def test_error_detail_is_bounded():
    code, detail = error_detail(b"x" * 100_000)
    assert code is None and len(detail) <= 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 10-99/100", (10, 99, 100)),
        ("bytes 0-0/*", (0, 0, None)),
        ("bytes */100", (None, None, 100)),
        ("BYTES 5-9/10", (5, 9, 10)),
        (None, None),
        ("", None),
        ("bytes=10-", None),
        ("items 1-2/3", None),
    ],
)
def test_parse_content_range(value, expected):
    assert parse_content_range(value) == expected


def _wrapped(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "reason", "retryable"),
    [
        (
            _wrapped(httpx.ConnectError("[Errno 111] Connection refused"), ConnectionRefusedError(111, "refused")),
            "connection refused",
            True,
        ),
        (
            _wrapped(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            "cannot resolve the host name",
            False,  # an answer: the name does not exist
        ),
        (
            _wrapped(
                httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
                socket.gaierror(-3, "Temporary failure in name resolution"),
            ),
            "cannot resolve the host name",
            True,
        ),
        (httpx.ConnectTimeout("timed out"), "connection timed out", True),
        (httpx.ReadTimeout("timed out"), "timed out", True),
        (
            httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
            "connection dropped",
            True,
        ),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), "connection dropped", True),
        (
            _wrapped(
                httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            ),
            "TLS handshake failed: it looks like a plain-HTTP registry",
            False,
        ),
        (
            _wrapped(
                httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
                ssl.SSLCertVerificationError(
                    1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
                ),
            ),
            "TLS certificate not trusted",
            False,
        ),
    ],
)
def test_describe_transport_error(exc, reason, retryable):
    failure = describe_transport_error(exc, "https://registry.example")
    assert failure.reason.startswith(reason)
    assert failure.retryable is retryable
    assert ("--insecure" in failure.hint) == (failure.kind in ("tls-plain", "tls-cert"))  # the ones it can fix


@pytest.mark.parametrize(
    ("url", "source", "expected"),
    [
        ("https://registry.example:5000", "", "for a registry that serves plain HTTP, pass --insecure"),
        ("https://127.0.0.1:5000", "", "the server answered in plain HTTP, not TLS"),
        ("https://localhost:5000", "", "the server answered in plain HTTP, not TLS"),
        (
            "https://mirror.example",
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            "if it serves plain HTTP, write its URL as http://... in /etc/containerd/certs.d/docker.io/hosts.toml",
        ),
        (
            "https://mirror.example",
            "/etc/containers/registries.conf",
            "if it serves plain HTTP, set insecure = true for it in /etc/containers/registries.conf",
        ),
        (
            "https://mirror.example",
            "/etc/docker/daemon.json",
            "if it serves plain HTTP, write its URL as http://... or list it in insecure-registries in "
            "/etc/docker/daemon.json",
        ),
    ],
)
def test_insecure_is_suggested_only_where_it_can_help(url, source, expected):
    exc = _wrapped(httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"), ssl.SSLError(1, "x"))
    failure = describe_transport_error(exc, url, source)
    assert failure.kind == "tls-plain" and failure.hint == expected


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("", ", or pass --insecure to skip verification"),
        ("/d/reg/hosts.toml", ", or set ca = (or skip_verify = true) in /d/reg/hosts.toml"),
        ("/etc/docker/daemon.json", ", or list its host[:port] in insecure-registries in /etc/docker/daemon.json"),
        ("/etc/containers/registries.conf", ", or set insecure = true for it in /etc/containers/registries.conf"),
    ],
)
def test_an_untrusted_certificate_offers_the_insecure_mark_of_its_source(source, fix):
    exc = _wrapped(
        httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    )
    failure = describe_transport_error(exc, "https://registry.example", source)
    assert failure.kind == "tls-cert" and failure.hint.endswith(fix)


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://ghcr.io/v2/", "http://proxy:3128"),
        ({"https_proxy": "http://proxy:3128", "no_proxy": "ghcr.io"}, "https://ghcr.io/v2/", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "https://ghcr.io/v2/", None),
        ({"HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3128"}, "http://127.0.0.1:5000/v2/", None),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://localhost:5000/v2/", None),
        ({}, "https://ghcr.io/v2/", None),
    ],
)
def test_proxy_for(monkeypatch, env, url, expected):
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(httpx.URL(url)) == expected
