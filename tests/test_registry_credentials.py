"""lookup_credentials: docker config.json (DOCKER_CONFIG), credHelpers, credsStore; no HTTP."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from cas.errors import CredentialError
from cas.registry.credentials import Credentials, lookup_credentials, normalize_registry


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture()
def docker_config(tmp_path, monkeypatch):
    """Write a config.json into a temp DOCKER_CONFIG; returns a writer."""
    directory = tmp_path / "docker"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never read the real ~/.docker

    def write(config: object) -> Path:
        path = directory / "config.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        return path

    return write


@pytest.fixture()
def helper(tmp_path, monkeypatch):
    """Put a fake ``docker-credential-test`` on PATH that answers from a JSON table.

    The table maps a server (as read from stdin) to {"Username", "Secret"}; a
    server missing from it gets "credentials not found" and exit 1. Each call is
    logged to calls.log so tests can tell whether the helper ran.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    table = tmp_path / "helper.json"
    log = tmp_path / "calls.log"
    script = bindir / "docker-credential-test"
    script.write_text(
        f"""#!{sys.executable}
import json, sys
server = sys.stdin.read().strip()
with open({str(log)!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
table = json.load(open({str(table)!r}))
mode = table.get("__mode__")
if mode == "crash":
    sys.stderr.write("helper exploded\\n"); sys.exit(3)
if mode == "garbage":
    print("this is not json"); sys.exit(0)
if server not in table:
    print("credentials not found in native keychain"); sys.exit(1)
print(json.dumps(dict(table[server], ServerURL=server)))
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    class Helper:
        def answer(self, entries: dict) -> None:
            table.write_text(json.dumps(entries))

        def calls(self) -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

    h = Helper()
    h.answer({})
    return h


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://host:5000/v2/", "host:5000"),
        ("http://Host.Example:5000", "host.example:5000"),
        ("host:5000", "host:5000"),
        ("127.0.0.1:5000/", "127.0.0.1:5000"),
        ("  ghcr.io ", "ghcr.io"),
    ],
)
def test_normalize_registry(key, expected):
    assert normalize_registry(key) == expected


def test_no_config_is_anonymous(docker_config):
    assert lookup_credentials("127.0.0.1:5000") is None


def test_docker_config_env_is_a_directory(docker_config):
    docker_config({"auths": {"127.0.0.1:5000": {"auth": _b64("alice:s3cret")}}})
    assert lookup_credentials("127.0.0.1:5000") == Credentials("alice", "s3cret")


def test_home_docker_config_when_env_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {"reg.example": {"auth": _b64("u:p")}}}))
    assert lookup_credentials("reg.example") == Credentials("u", "p")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"auth": _b64("alice:pa:ss")}, Credentials("alice", "pa:ss")),  # only the first colon splits
        ({"username": "bob", "password": "pw"}, Credentials("bob", "pw")),
        ({"identitytoken": "refresh-me"}, Credentials(identity_token="refresh-me")),
        ({"auth": _b64("carol:pw"), "identitytoken": "tok"}, Credentials("carol", "pw", "tok")),
        ({}, None),
        ({"email": "x@example.com"}, None),
    ],
)
def test_auth_entries(docker_config, entry, expected):
    docker_config({"auths": {"reg.example:5000": entry}})
    assert lookup_credentials("reg.example:5000") == expected


@pytest.mark.parametrize(
    "key", ["https://reg.example:5000/v2/", "http://reg.example:5000", "reg.example:5000/", "REG.example:5000"]
)
def test_keys_with_scheme_or_path_match(docker_config, key):
    docker_config({"auths": {key: {"auth": _b64("u:p")}}})
    assert lookup_credentials("reg.example:5000") == Credentials("u", "p")


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"])
@pytest.mark.parametrize("asked", ["registry-1.docker.io", "docker.io"])
def test_docker_hub_spellings(docker_config, key, asked):
    docker_config({"auths": {key: {"auth": _b64("hubuser:hubpass")}}})
    assert lookup_credentials(asked) == Credentials("hubuser", "hubpass")


def test_other_registry_is_not_matched(docker_config):
    docker_config({"auths": {"reg.example:5000": {"auth": _b64("u:p")}}})
    assert lookup_credentials("reg.example:5001") is None
    assert lookup_credentials("reg.example") is None


def test_secrets_stay_out_of_repr():
    text = repr(Credentials("alice", "s3cret", "tok3n"))
    assert "alice" in text and "s3cret" not in text and "tok3n" not in text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "malformed docker config"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"auths": []}), "'auths' is not an object"),
        (json.dumps({"auths": {"reg.example": "nope"}}), "expected an object"),
        (json.dumps({"auths": {"reg.example": {"auth": "%%%not-base64"}}}), "not base64"),
        (json.dumps({"auths": {"reg.example": {"auth": _b64("no-colon")}}}), "not base64 of USER:PASSWORD"),
        (json.dumps({"credHelpers": {"reg.example": "../evil"}}), "not a helper name"),
    ],
)
def test_malformed_config_names_the_file(docker_config, content, fragment):
    path = docker_config(content)
    with pytest.raises(CredentialError) as info:
        lookup_credentials("reg.example")
    assert fragment in info.value.message
    assert str(path) in info.value.message


def test_empty_config_file_is_anonymous(docker_config):
    docker_config("")
    assert lookup_credentials("reg.example") is None


def test_unreadable_config_is_a_credential_error(docker_config):
    path = docker_config({})
    path.unlink()
    path.mkdir()  # a directory where the file should be: reading fails with an OSError
    with pytest.raises(CredentialError) as info:
        lookup_credentials("reg.example")
    assert str(path) in info.value.message


def test_cred_helper_for_the_registry(docker_config, helper):
    helper.answer({"reg.example:5000": {"Username": "hal", "Secret": "pw"}})
    docker_config({"credHelpers": {"https://reg.example:5000": "test"}, "auths": {"reg.example:5000": {}}})
    assert lookup_credentials("reg.example:5000") == Credentials("hal", "pw")
    assert helper.calls() == ["get reg.example:5000"]


def test_cred_helper_beats_inline_auth(docker_config, helper):
    helper.answer({"reg.example": {"Username": "from-helper", "Secret": "pw"}})
    docker_config({"credHelpers": {"reg.example": "test"}, "auths": {"reg.example": {"auth": _b64("inline:pw")}}})
    assert lookup_credentials("reg.example").username == "from-helper"


def test_creds_store_is_asked_with_docker_hubs_key(docker_config, helper):
    helper.answer({"https://index.docker.io/v1/": {"Username": "hub", "Secret": "pw"}})
    docker_config({"credsStore": "test", "auths": {"https://index.docker.io/v1/": {}}})
    assert lookup_credentials("registry-1.docker.io") == Credentials("hub", "pw")
    assert helper.calls() == ["get https://index.docker.io/v1/"]


def test_inline_auth_wins_over_creds_store_without_running_it(docker_config, helper):
    docker_config({"credsStore": "test", "auths": {"reg.example": {"auth": _b64("inline:pw")}}})
    assert lookup_credentials("reg.example") == Credentials("inline", "pw")
    assert helper.calls() == []


def test_helper_credentials_not_found_is_anonymous(docker_config, helper):
    docker_config({"credsStore": "test"})
    assert lookup_credentials("unknown.example") is None
    assert helper.calls() == ["get unknown.example"]


def test_helper_identity_token(docker_config, helper):
    helper.answer({"reg.example": {"Username": "<token>", "Secret": "refresh"}})
    docker_config({"credHelpers": {"reg.example": "test"}})
    assert lookup_credentials("reg.example") == Credentials(identity_token="refresh")


@pytest.mark.parametrize(("mode", "fragment"), [("crash", "exit 3"), ("garbage", "not JSON")])
def test_failing_helper_is_a_credential_error_naming_it(docker_config, helper, mode, fragment):
    helper.answer({"__mode__": mode})
    docker_config({"credsStore": "test"})
    with pytest.raises(CredentialError) as info:
        lookup_credentials("reg.example")
    assert "docker-credential-test" in info.value.message
    assert fragment in info.value.message


def test_missing_helper_is_a_credential_error_naming_it(docker_config):
    docker_config({"credsStore": "does-not-exist-anywhere"})
    with pytest.raises(CredentialError) as info:
        lookup_credentials("reg.example")
    assert "docker-credential-does-not-exist-anywhere" in info.value.message
    assert info.value.hint


# --- the containers auth files of podman, buildah and skopeo -------------------------------------
@pytest.fixture()
def auth_files(tmp_path, monkeypatch):
    """$XDG_RUNTIME_DIR and $XDG_CONFIG_HOME in tmp_path, $REGISTRY_AUTH_FILE unset; write(path, config)."""
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runtime, config = tmp_path / "run/containers/auth.json", tmp_path / "config/containers/auth.json"

    def write(path: Path, auths: dict) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": auths}))
        return path

    return runtime, config, write


def _entry(user: str, password: str = "pw") -> dict:
    return {"auth": _b64(f"{user}:{password}")}


def test_podman_logins_are_read_after_docker_config_runtime_file_first(docker_config, auth_files):
    runtime, config, write = auth_files
    write(config, {"reg.example": _entry("from-config-home"), "other.example": _entry("only-here")})
    assert lookup_credentials("reg.example") == Credentials("from-config-home", "pw")
    write(runtime, {"reg.example": _entry("from-runtime")})
    assert lookup_credentials("reg.example") == Credentials("from-runtime", "pw")
    assert lookup_credentials("other.example") == Credentials("only-here", "pw")  # the next file is read too
    docker_config({"auths": {"reg.example": _entry("from-docker")}})
    assert lookup_credentials("reg.example") == Credentials("from-docker", "pw")  # what `cas login` wrote wins


def test_registry_auth_file_replaces_the_default_auth_files(docker_config, auth_files, tmp_path, monkeypatch):
    runtime, _, write = auth_files
    write(runtime, {"reg.example": _entry("default")})
    chosen = write(tmp_path / "chosen.json", {"elsewhere.example": _entry("chosen")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(chosen))
    assert lookup_credentials("reg.example") is None
    assert lookup_credentials("elsewhere.example") == Credentials("chosen", "pw")


def test_without_xdg_runtime_dir_the_primary_file_is_under_run_containers(monkeypatch):
    from cas.registry.credentials import containers_auth_files

    monkeypatch.setenv("HOME", "/home/u")
    assert containers_auth_files({}) == [
        Path(f"/run/containers/{os.getuid()}/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
    ]


def test_an_auth_file_key_naming_a_namespace_is_not_the_hosts(docker_config, auth_files):
    runtime, _, write = auth_files
    write(runtime, {"reg.example/team": _entry("team"), "https://legacy.example/v1/": _entry("legacy")})
    assert lookup_credentials("reg.example") is None
    assert lookup_credentials("legacy.example") == Credentials("legacy", "pw")  # a scheme: the path is dropped


def test_a_malformed_auth_file_names_it(docker_config, auth_files):
    runtime, _, _ = auth_files
    runtime.parent.mkdir(parents=True)
    runtime.write_text("{not json")
    with pytest.raises(CredentialError, match=f"malformed containers auth file {runtime}"):
        lookup_credentials("reg.example")


def test_a_docker_hub_login_is_saved_under_dockers_own_key_and_found_by_every_spelling(docker_config):
    from cas.registry.login import erase_credentials, store_credentials

    path = docker_config({"auths": {"other.example": _entry("other")}})
    assert store_credentials("docker.io", Credentials("hub", "pw")) == str(path)
    assert list(json.loads(path.read_text())["auths"]) == ["other.example", "https://index.docker.io/v1/"]
    assert lookup_credentials("registry-1.docker.io") == Credentials("hub", "pw")
    assert erase_credentials("docker.io") and lookup_credentials("docker.io") is None
    assert lookup_credentials("other.example") == Credentials("other", "pw")
