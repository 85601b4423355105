"""`cas login` reaches a registry as pulls and pushes do: hosts.toml, registries.conf and daemon.json.

The registry here asks for a password (htpasswd) and speaks only TLS, with a certificate from a
test CA nobody trusts. It is on loopback, which cas reaches over plain HTTP unless a file says
otherwise, so a login that ignored the machine's configuration would fail against it: the
files are what makes each login below work, and the registry's access log shows the checked
``GET /v2/`` (over TLS: it serves nothing else).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support import images
from support.pki import make_pki
from support.registry import Registry

NO_CONFIG = {"CAS_HOSTS_DIR": "", "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_basic(tmp_path_factory, pki):
    registry = Registry(tmp_path_factory.mktemp("tls-basic"), auth="basic", tls=pki).start()
    yield registry
    registry.stop()


@pytest.fixture(autouse=True)
def _isolated(cas_home, monkeypatch, tls_basic):
    for name, value in NO_CONFIG.items():
        monkeypatch.setenv(name, value)
    tls_basic.mark()  # each test counts only its own requests


def _login(cas, registry: Registry, env: dict[str, str]):
    return cas(
        "login", "-u", registry.username, "--password-stdin", registry.host,
        input=f"{registry.password}\n", env=env, check=False,
    )  # fmt: skip


def _saved() -> dict:
    path = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    return json.loads(path.read_text())["auths"] if path.exists() else {}


def _checked(registry: Registry) -> list[int]:
    """The statuses of the login checks (``GET /v2/``) the TLS-only registry answered."""
    return [r.status for r in registry.requests() if r.method == "GET" and r.path == "/v2/"]


def test_without_configuration_a_loopback_login_speaks_plain_http_and_fails(cas, tls_basic):
    proc = _login(cas, tls_basic, {})
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 2
    assert _checked(tls_basic) == [] and _saved() == {}


def test_login_uses_the_hosts_toml_server_and_its_ca(cas, tls_basic, pki, tmp_path):
    directory = tmp_path / "hosts.d" / tls_basic.host
    directory.mkdir(parents=True)
    shutil.copy(pki.ca, directory / "ca.pem")
    (directory / "hosts.toml").write_text(f'server = "https://{tls_basic.host}"\nca = "ca.pem"\n')
    proc = _login(cas, tls_basic, {"CAS_HOSTS_DIR": str(tmp_path / "hosts.d")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"logged in to {tls_basic.host} as {tls_basic.username}")
    assert _checked(tls_basic) == [401, 200] and tls_basic.host in _saved()  # the challenge, then the login


@pytest.mark.parametrize("source", ["registries.conf", "daemon.json"])
def test_login_honours_insecure_from_the_runtimes_files(cas, tls_basic, tmp_path, source):
    path = tmp_path / source
    if source == "registries.conf":
        path.write_text(f'[[registry]]\nlocation = "{tls_basic.host}"\ninsecure = true\n')
        env = {"CAS_REGISTRIES_CONF": str(path)}
    else:
        path.write_text(json.dumps({"insecure-registries": [tls_basic.host]}))
        env = {"CAS_DOCKER_DAEMON_JSON": str(path)}
    proc = _login(cas, tls_basic, env)
    assert proc.returncode == 0, proc.stderr
    assert _checked(tls_basic) == [401, 200] and tls_basic.host in _saved()  # the challenge, then the login


def test_a_registries_conf_entry_below_the_registry_does_not_apply_to_its_login(cas, tls_basic, tmp_path):
    """As in podman login: the login names a registry, so an entry for one of its repositories is not its."""
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "{tls_basic.host}/team"\nlocation = "{tls_basic.host}/team"\ninsecure = true\n'
    )
    proc = _login(cas, tls_basic, {"CAS_REGISTRIES_CONF": str(conf)})
    assert proc.returncode == 1 and _checked(tls_basic) == [] and _saved() == {}


def test_a_broken_configuration_file_fails_before_the_password_is_read(cas, tls_basic, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text("[[registry]\n")
    proc = cas("login", tls_basic.host, env={"CAS_REGISTRIES_CONF": str(conf)}, check=False)  # no terminal, no -u
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {conf}")
    assert "password" not in proc.stderr and _checked(tls_basic) == [] and _saved() == {}


def test_without_a_registry_login_means_docker_hub_and_is_saved_for_the_host_it_was_checked_on(
    cas, basic_registry, tmp_path
):
    """As with docker login, no registry means Docker Hub. Here a hosts.toml puts Docker Hub's server
    on the local htpasswd registry (no network), so the check goes there and the login is saved for
    that host, the one a pull of a docker.io image then asks for credentials."""
    directory = tmp_path / "hosts.d" / "docker.io"
    directory.mkdir(parents=True)
    (directory / "hosts.toml").write_text(f'server = "http://{basic_registry.host}"\n')
    images.push(basic_registry, "library/hello", "1", images.Image([images.layer({"hello.txt": "hi\n"})]))
    env = {"CAS_HOSTS_DIR": str(tmp_path / "hosts.d")}
    assert cas("pull", "-q", "hello:1", env=env, check=False).returncode == 1  # anonymous: refused

    mark = basic_registry.mark()
    proc = cas(
        "login", "-u", basic_registry.username, "--password-stdin",
        input=f"{basic_registry.password}\n", env=env,
    )  # fmt: skip
    where = f"where {directory / 'hosts.toml'} puts docker.io"
    assert proc.stderr.startswith(f"logged in to {basic_registry.host} as {basic_registry.username}, {where}")
    assert [r.status for r in basic_registry.requests(mark) if r.path == "/v2/"] == [401, 200]
    assert list(_saved()) == [basic_registry.host]
    assert cas("pull", "-q", "hello:1", env=env).returncode == 0  # docker.io/library/hello, with that login

    assert cas("logout", env=env).stderr == f"removed login for {basic_registry.host}\n" and _saved() == {}
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"  # a login saved under the name, before the move
    config.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}}))
    assert cas("logout", env=env).stderr == "removed login for docker.io\n" and _saved() == {}
