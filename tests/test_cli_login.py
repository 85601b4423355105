"""cas login / logout against the htpasswd registry: docker's config.json, or its credential helper."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

HELPER = """#!/bin/sh
# a docker credential helper keeping one secret in a file, and a log of its calls
dir={dir}
echo "$1" >> "$dir/calls"
case "$1" in
  store) cat > "$dir/secret.json" ;;
  get)
    read server
    [ -f "$dir/secret.json" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
    {python} -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$dir/secret.json" ;;
  erase)
    read server
    [ -f "$dir/secret.json" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
    rm "$dir/secret.json" ;;
esac
"""


def _config(cas_home: Path) -> dict:
    path = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_login_then_pull_needs_no_username(cas, cas_home, basic_registry, test_images):
    ref = test_images.ref(basic_registry, "base")
    host, user, password = basic_registry.host, basic_registry.username, basic_registry.password
    assert cas("pull", "-q", ref, check=False).returncode == 1  # anonymous: refused

    proc = cas("login", "-u", user, "--password-stdin", host, input=f"{password}\n")
    assert proc.stderr.startswith(f"logged in to {host} as {user}")
    assert password not in proc.stderr + proc.stdout
    entry = _config(cas_home)["auths"][host]
    assert base64.b64decode(entry["auth"]).decode() == f"{user}:{password}"
    mode = (Path(os.environ["DOCKER_CONFIG"]) / "config.json").stat().st_mode & 0o777
    assert mode == 0o600
    assert cas("pull", "-q", ref).returncode == 0

    assert cas("logout", host).stderr == f"removed login for {host}\n"
    assert host not in _config(cas_home)["auths"]
    again = cas("logout", host, check=False)
    assert again.returncode == 0 and again.stderr.startswith(f"not logged in to {host}")  # as docker logout


def test_a_refused_login_saves_nothing(cas, cas_home, basic_registry):
    proc = cas(
        "login", "-u", basic_registry.username, "--password-stdin", basic_registry.host, input="wrong\n", check=False
    )
    assert proc.returncode == 1 and "authentication failed" in proc.stderr
    assert len(proc.stderr.splitlines()) == 2
    assert _config(cas_home) == {}


def test_login_keeps_other_entries_and_never_takes_a_password_argument(cas, cas_home, basic_registry):
    config_path = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config_path.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "table"}))
    cas("login", "-u", basic_registry.username, "--password-stdin", basic_registry.host, input=basic_registry.password)
    config = _config(cas_home)
    assert config["psFormat"] == "table" and config["auths"]["other.example"] == {"auth": "eDp5"}
    assert basic_registry.host in config["auths"]
    for args in (["--password", "x"], ["-p", "x"]):
        proc = cas("login", *args, basic_registry.host, check=False)
        assert proc.returncode == 2 and "no such option" in proc.stderr
    no_tty = cas("login", basic_registry.host, input="", check=False)  # stdin is a pipe: no prompt possible
    assert no_tty.returncode == 2 and "--password-stdin" in no_tty.stderr


def test_login_goes_through_the_credential_store_when_docker_has_one(
    cas, cas_home, basic_registry, test_images, tmp_path
):
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()
    program = helper_dir / "docker-credential-castest"
    program.write_text(HELPER.format(dir=helper_dir, python=sys.executable))
    program.chmod(0o755)
    env = {"PATH": f"{helper_dir}:{os.environ['PATH']}"}
    config_path = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config_path.write_text(json.dumps({"credsStore": "castest"}))
    host = basic_registry.host

    cas("login", "-u", basic_registry.username, "--password-stdin", host, input=basic_registry.password, env=env)
    assert _config(cas_home)["auths"] == {host: {}}  # the marker docker writes; the secret is in the helper
    secret = json.loads((helper_dir / "secret.json").read_text())
    assert secret == {"ServerURL": host, "Username": basic_registry.username, "Secret": basic_registry.password}
    assert cas("pull", "-q", test_images.ref(basic_registry, "base"), env=env).returncode == 0
    cas("logout", host, env=env)
    assert not (helper_dir / "secret.json").exists() and _config(cas_home)["auths"] == {}
    assert (helper_dir / "calls").read_text().split() == ["store", "get", "erase"]


def test_a_podman_login_is_used_by_cas(cas, cas_home, basic_registry, test_images, podman, tmp_path):
    """podman writes its login to $XDG_RUNTIME_DIR/containers/auth.json; docker's config is left empty."""
    from support.tools import run

    (tmp_path / "run").mkdir()
    env = {**podman.env, "XDG_RUNTIME_DIR": str(tmp_path / "run"), "REGISTRY_AUTH_FILE": ""}
    ref = test_images.ref(basic_registry, "base")
    assert cas("pull", "-q", ref, env=env, check=False).returncode == 1  # anonymous: refused
    login = [*podman.base, "login", "--tls-verify=false", "-u", basic_registry.username, "--password-stdin"]
    run([*login, basic_registry.host], input=basic_registry.password, env=env)
    assert (tmp_path / "run/containers/auth.json").is_file() and _config(cas_home) == {}
    pulled = cas("-v", "pull", "-q", ref, env=env)
    auth_file = tmp_path / "run/containers/auth.json"
    assert f"credentials for {basic_registry.host}: auths['{basic_registry.host}'] in {auth_file}" in pulled.stderr
    assert basic_registry.password not in pulled.stderr


def test_login_asks_for_the_user_and_a_hidden_password_on_a_terminal(pane, cas_home, basic_registry):
    """Without --password-stdin, in a real terminal: the prompts, and a password that never shows."""
    import shlex

    from support.tools import wait_until

    repo = Path(__file__).resolve().parent.parent
    env = f"CAS_HOME={shlex.quote(str(cas_home))} DOCKER_CONFIG={shlex.quote(os.environ['DOCKER_CONFIG'])}"
    command = f"{shlex.quote(sys.executable)} -m cli login {basic_registry.host}"
    terminal = pane(120)
    terminal.start(f"cd {shlex.quote(str(repo))} && env {env} {command}; echo EXIT=$?; sleep 600")

    def shown(text: str) -> list[str]:
        return wait_until(lambda: (lambda s: s if any(text in line for line in s) else None)(terminal.screen()),
                          timeout=30, what=f"{text!r} on the terminal")  # fmt: skip

    shown("Username:")
    terminal.type(basic_registry.username)
    shown("Password:")
    terminal.type(basic_registry.password)
    screen = shown("EXIT=")
    assert "EXIT=0" in screen and any(line.startswith(f"logged in to {basic_registry.host} as") for line in screen)
    assert not any(basic_registry.password in line for line in screen)
    entry = _config(cas_home)["auths"][basic_registry.host]
    assert base64.b64decode(entry["auth"]).decode() == f"{basic_registry.username}:{basic_registry.password}"
