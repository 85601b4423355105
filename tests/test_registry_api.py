"""The public surface of cas.registry and what it costs to start: names, imports, TLS, helpers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import images

import cas.registry
from cas.registry import RegistryClient

REPO = Path(__file__).resolve().parent.parent
PUBLIC = [
    "Credentials",
    "FetchedManifest",
    "RegistryClient",
    "Sink",
    "TokenCache",
    "lookup_credentials",
    "parse_www_authenticate",
]


def test_public_names_are_pinned():
    assert cas.registry.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(cas.registry, name) is not None
    with pytest.raises(AttributeError):
        cas.registry.NoSuchThing  # noqa: B018


@pytest.mark.parametrize(
    ("host", "insecure", "base"),
    [
        ("127.0.0.1:5000", False, "http://127.0.0.1:5000"),
        ("localhost:5000", False, "http://localhost:5000"),
        ("[::1]:5000", False, "http://[::1]:5000"),
        ("registry-1.docker.io", False, "https://registry-1.docker.io"),
        ("10.0.0.5:5000", False, "https://10.0.0.5:5000"),
        ("10.0.0.5:5000", True, "https://10.0.0.5:5000"),  # insecure: HTTPS unverified, plain HTTP if it must
        ("127.0.0.1:5000", True, "https://127.0.0.1:5000"),
    ],
)
def test_scheme_is_plain_http_only_for_loopback(host, insecure, base):
    client = RegistryClient(host, insecure=insecure)  # nothing is contacted
    assert client.base == base
    client.close()


def _python(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_package_or_credentials_does_not_import_httpx():
    got = _python(
        "import json, sys\n"
        "import cas.registry, cas.registry.credentials\n"
        "print(json.dumps({'httpx': 'httpx' in sys.modules}))\n"
    )
    assert got == {"httpx": False}


def test_a_plain_http_pull_builds_no_tls_context_and_imports_no_ui(registry, tmp_path):
    image = images.Image([images.random_layer(50_000, seed=31)])
    images.push(registry, "cas-test/api", "1", image)
    # Loading CA certificates is the ~90 ms part of a TLS context: count every load.
    got = _python(
        "import json, ssl, sys\n"
        "loads = []\n"
        "for name in ('load_verify_locations', 'set_default_verify_paths', 'load_default_certs'):\n"
        "    real = getattr(ssl.SSLContext, name)\n"
        "    setattr(ssl.SSLContext, name, lambda self, *a, _real=real, _n=name, **k: (loads.append(_n), _real(self, *a, **k))[1])\n"
        "from cas.registry import RegistryClient\n"
        "import cas.registry.transport as transport\n"
        f"with RegistryClient({registry.host!r}) as c:\n"
        "    digest = str(c.get_manifest('cas-test/api', '1').digest)\n"
        "print(json.dumps({'digest': digest, 'tls': bool(transport._tls_contexts), 'loads': loads,\n"
        "    'rich': 'rich' in sys.modules, 'typer': 'typer' in sys.modules}))\n",
        env={"DOCKER_CONFIG": str(tmp_path)},
    )
    assert got == {"digest": image.digest, "tls": False, "loads": [], "rich": False, "typer": False}


@pytest.fixture()
def recording_helper(tmp_path, monkeypatch):
    """A docker config whose credsStore is a helper that logs each call and knows one login."""
    bindir, config = tmp_path / "bin", tmp_path / "docker"
    bindir.mkdir()
    config.mkdir()
    log = tmp_path / "helper.log"
    secrets: dict[str, dict] = {}
    table = tmp_path / "secrets.json"
    script = bindir / "docker-credential-rec"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(server + '\\n')\n"
        f"table = json.load(open({str(table)!r}))\n"
        "if server not in table:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(table[server]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (config / "config.json").write_text(json.dumps({"credsStore": "rec"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    class Helper:
        def knows(self, server: str, username: str, secret: str) -> None:
            secrets[server] = {"ServerURL": server, "Username": username, "Secret": secret}
            table.write_text(json.dumps(secrets))

        def calls(self) -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

    helper = Helper()
    table.write_text("{}")
    return helper


def test_anonymous_pulls_never_run_a_credential_helper(registry, recording_helper):
    image = images.Image([images.random_layer(20_000, seed=32)])
    images.push(registry, "cas-test/api", "anon", image)
    with RegistryClient(registry.host) as client:
        assert str(client.get_manifest("cas-test/api", "anon").digest) == image.digest
    assert recording_helper.calls() == []


def test_a_challenge_runs_the_credential_helper_once(basic_registry, recording_helper):
    image = images.Image([images.random_layer(20_000, seed=33)])
    images.push(basic_registry, "cas-test/api", "helper", image)
    recording_helper.knows(basic_registry.host, basic_registry.username, basic_registry.password)
    with RegistryClient(basic_registry.host, retries=1, backoff=0.01) as client:
        assert str(client.get_manifest("cas-test/api", "helper").digest) == image.digest
        client.get_manifest("cas-test/api", "helper")
    assert recording_helper.calls() == [basic_registry.host]
