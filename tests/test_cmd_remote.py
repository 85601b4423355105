"""`cas ls` and `cas inspect --remote`: a registry's tags and images, asked without the store.

Against the suite's real registries (plain, htpasswd, bearer tokens, TLS through hosts.toml); what
reached the registry is read from its own access log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import uuid
from pathlib import Path

import pytest
from support import images
from support.auth import client as registry_client
from support.pki import make_pki
from support.registry import Registry


def _listing(home: Path) -> dict[str, tuple[int, str]]:
    """Every file under CAS_HOME with its mode and the hash of its bytes (directories as well)."""
    out = {}
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root, name)
            data = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            out[str(path.relative_to(home))] = (path.stat().st_mode, data)
    return out


def _tag_many(registry, test_images, count: int) -> str:
    """A new repository holding the base image under ``count`` tags."""
    repository = f"tags-{uuid.uuid4().hex[:8]}/base"
    base = test_images.base
    images.push(registry, repository, "t00", base)
    with registry_client(registry, push=True) as c:
        for n in range(1, count):
            images.put_manifest(c, repository, f"t{n:02}", base.manifest_blob)
    return repository


def test_ls_follows_every_page_and_writes_nothing(cas, cas_home, registry, proxy, test_images):
    repository = _tag_many(registry, test_images, 11)
    cas("pull", test_images.ref(registry, "base"))  # a store with something in it
    before = _listing(cas_home)
    proxy.page_tags(3)  # distribution 2.8 answers every tag at once: the proxy pages them as 3.x does
    out = json.loads(cas("ls", "--json", f"{proxy.host}/{repository}").stdout)
    assert out["repository"] == f"{proxy.host}/{repository}"
    assert out["tags"] == [f"t{n:02}" for n in range(11)]
    pages = [r for r in proxy.requests if r.kind == "tags" and r.status == 200]
    assert len(pages) == 4 and [p.path.count("last=") for p in pages] == [0, 1, 1, 1]  # 3+3+3+2, each via Link
    asked = json.loads(cas("ls", "--json", "--page-size", "2", f"{proxy.host}/{repository}").stdout)
    assert asked["tags"] == out["tags"] and len([r for r in proxy.requests if r.kind == "tags"]) == 4 + 6
    assert cas("ls", f"{registry.host}/{repository}").stdout.splitlines() == out["tags"]  # one page, sorted
    assert _listing(cas_home) == before


def test_ls_with_htpasswd_and_token_registries(cas, basic_registry, token_registry, token_server, test_images):
    test_images.push(basic_registry)
    login = ["-u", basic_registry.username, "--password-stdin"]
    out = cas("ls", *login, f"{basic_registry.host}/base", input=basic_registry.password + "\n")
    assert out.stdout.splitlines() == ["latest"]
    refused = cas("ls", f"{basic_registry.host}/base", check=False)
    assert refused.returncode != 0 and refused.stderr.count("\n") == 2 and refused.stderr.startswith("error: ")
    test_images.push(token_registry)
    assert cas("ls", f"{token_registry.host}/multi").stdout == "latest\n"


def test_ls_errors_say_what_to_do(cas, registry):
    tagged = cas("ls", f"{registry.host}/base:latest", check=False)
    assert tagged.returncode == 2
    assert tagged.stderr.splitlines() == [
        f"error: {registry.host}/base:latest names an image, not a repository",
        f"hint: list its tags with `cas ls {registry.host}/base`",
    ]
    missing = cas("ls", f"{registry.host}/no/such-repo", check=False)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"error: repository {registry.host}/no/such-repo not found: repository name not known to registry",
        "hint: check the repository name (no tag)",
    ]
    assert cas("ls", check=False).returncode == 2


def test_inspect_remote_shows_an_index_and_the_picked_platform_without_touching_the_store(
    cas, cas_home, registry, test_images
):
    multi = test_images.multi
    ref = test_images.ref(registry, "multi")
    cas("pull", test_images.ref(registry, "base"))
    before = _listing(cas_home)
    out = json.loads(cas("inspect", "--remote", "--json", "--platform", "linux/arm64", ref).stdout)
    assert out["remote"] is True and out["digest"] == multi.digest
    assert [p["manifest"] for p in out["platforms"]] == [img.digest for img in multi.images]
    arm = multi.for_platform("linux/arm64/v8")
    assert out["manifest"] == arm.digest and out["platform"] == "linux/arm64/v8"
    assert out["config"]["digest"] == arm.config_blob.digest
    assert [layer["digest"] for layer in out["layers"]] == [layer.digest for layer in arm.layers]

    raw = cas("inspect", "--remote", "--raw", ref, text=False).stdout
    assert raw == multi.manifest_blob.data
    assert cas("inspect", "--remote", "--digest", ref).stdout == multi.digest + "\n"
    assert cas("inspect", "--remote", "--digest", "--platform", "linux/arm64", ref).stdout == arm.digest + "\n"
    config = cas("inspect", "--remote", "--config", "--platform", "linux/arm64", ref, text=False).stdout
    assert config == arm.config_blob.data
    text = cas("inspect", "--remote", "--platform", "linux/arm64", ref).stdout
    assert f"Index: {multi.digest}" in text and "linux/arm64/v8" in text and "Layers: " in text
    assert _listing(cas_home) == before


def test_inspect_remote_of_a_plain_manifest_matches_the_local_inspect(cas, registry, test_images):
    ref = test_images.ref(registry, "app")
    remote = json.loads(cas("inspect", "--remote", "--json", ref).stdout)
    cas("pull", ref)
    local = json.loads(cas("inspect", "--json", ref).stdout)
    assert "platforms" not in remote
    for key in ("digest", "manifest", "platform", "config", "layers", "size"):
        assert remote[key] == local[key], key
    wrong = cas("inspect", "--remote", "--platform", "linux/s390x", ref, check=False)
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: ") and wrong.stderr.count("\n") == 2
    both = cas("inspect", "--remote", "--raw", "--digest", ref, check=False)
    assert both.returncode == 2 and "--digest prints the digest alone" in both.stderr


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    registry = Registry(tmp_path_factory.mktemp("tls-remote"), tls=pki).start()
    context = ssl.create_default_context(cafile=str(pki.ca))
    image = images.Image([images.busybox_layer(), images.layer({"hello.txt": "tls\n"})])
    images.push(registry, "app", "1", image, verify=context)
    images.push(registry, "app", "2", image, verify=context)
    yield registry, pki, image
    registry.stop()


def test_ls_and_inspect_remote_over_tls_configured_by_hosts_toml(cas, tls_registry, tmp_path):
    registry, pki, image = tls_registry
    directory = tmp_path / "hosts.d" / registry.host
    directory.mkdir(parents=True)
    shutil.copy(pki.ca, directory / "ca.pem")
    (directory / "hosts.toml").write_text(f'server = "https://{registry.host}"\nca = "ca.pem"\n')
    env = {"CAS_HOSTS_DIR": str(tmp_path / "hosts.d")}
    assert cas("ls", f"{registry.host}/app", env=env).stdout == "1\n2\n"
    out = cas("inspect", "--remote", "--digest", f"{registry.host}/app:2", env=env).stdout
    assert out == image.digest + "\n"
    plain = cas("ls", f"{registry.host}/app", check=False)  # without hosts.toml: plain HTTP to a TLS server
    assert plain.returncode == 1 and plain.stderr.startswith("error: ")


def test_ls_and_inspect_remote_ask_a_mirror_first_as_pull_does(cas, cas_home, registry, proxy, test_images, tmp_path):
    test_images.push(registry)
    directory = tmp_path / "hosts.d" / registry.host
    directory.mkdir(parents=True)
    (directory / "hosts.toml").write_text(
        f'server = "{registry.url}"\n\n[host."{proxy.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    env = {"CAS_HOSTS_DIR": str(tmp_path / "hosts.d")}
    assert cas("ls", f"{registry.host}/base", env=env).stdout == "latest\n"
    digest = cas("inspect", "--remote", "--digest", test_images.ref(registry, "base"), env=env).stdout
    assert digest == test_images.base.digest + "\n"
    assert [r.kind for r in proxy.requests if r.status == 200] == ["tags", "manifest"]  # the mirror answered
    assert not (cas_home / "v1").exists()  # no store was made
