"""Wrong bytes from a registry with no mirror configured: the error names the registry, the image
and the blob's position in it, as the mirror path does, and nothing is stored."""

from __future__ import annotations

import json

import pytest
from support import images

REPO = "wrong-bytes/app"


@pytest.fixture(scope="module")
def image(registry) -> images.Image:
    img = images.Image([images.random_layer(30_000 + n, seed=2040 + n) for n in range(3)])
    images.push(registry, REPO, "1", img)
    return img


def _stored(cas_home) -> set[str]:
    blobs = cas_home / "v1" / "blobs" / "sha256"
    return {p.name for p in blobs.iterdir()} if blobs.exists() else set()


@pytest.mark.parametrize("position", [1, 2, 3])
def test_a_layer_with_wrong_bytes_names_the_registry_the_image_and_the_layer(cas, cas_home, proxy, image, position):
    ref = f"{proxy.host}/{REPO}:1"
    bad = image.layers[position - 1].blob("oci").digest
    proxy.corrupt_answers(pattern=bad)

    proc = cas("pull", ref, check=False)

    assert proc.returncode == 1, proc.stderr
    error, hint = proc.stderr.strip().splitlines()
    assert error == (
        f"error: layer {position}/3 of {ref}: registry {proxy.host} served wrong bytes: "
        f"blob digest mismatch: expected {bad}, got sha256:{error.rsplit('sha256:', 1)[1]}"
    )
    assert hint.startswith("hint: ") and "nothing was stored" in hint
    assert [r.fault for r in proxy.requests if r.kind == "blob" and bad in r.path] == ["corrupt"]
    assert bad.removeprefix("sha256:") not in _stored(cas_home)
    assert json.loads(cas("images", "--json").stdout)["images"] == []


# With --platform, a plain manifest's config is fetched into memory first, to check its platform.
@pytest.mark.parametrize("platform", [[], ["--platform", "linux/amd64"]], ids=["stored", "checked-in-memory"])
def test_a_config_with_wrong_bytes_is_named_as_the_config_of_the_image(cas, cas_home, proxy, image, platform):
    ref = f"{proxy.host}/{REPO}:1"
    bad = image.config_blob.digest
    proxy.corrupt_answers(pattern=bad)

    proc = cas("pull", *platform, ref, check=False)

    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: config of {ref}: registry {proxy.host} served wrong bytes: "), proc.stderr
    assert f"digest mismatch: expected {bad}, got sha256:" in proc.stderr
    assert bad.removeprefix("sha256:") not in _stored(cas_home)


@pytest.mark.parametrize("kind", ["layer", "manifest"])
def test_in_a_multi_platform_pull_the_platform_is_named_too(cas, proxy, test_images, kind):
    ref = f"{proxy.host}/multi:latest"
    image = test_images.multi.for_platform("linux/arm64/v8")
    if kind == "layer":
        bad, place = image.layers[0].blob("oci").digest, "layer 1/1"
    else:
        bad, place = image.digest, "manifest"
    proxy.corrupt_answers(pattern=f"/(blobs|manifests)/{bad}$")

    proc = cas("pull", "--all-platforms", ref, check=False)

    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"error: {place} of {ref} (linux/arm64/v8): registry {proxy.host} served wrong bytes: "
        f"{'blob' if kind == 'layer' else 'manifest'} digest mismatch: expected {bad}, got sha256:"
    ), proc.stderr


def _hosts(tmp_path, registry, proxy, server_capabilities: str = "") -> str:
    """``proxy`` as the registry's pull mirror in a hosts.toml; the CAS_HOSTS_DIR to name it."""
    hosts = tmp_path / "hosts.d" / registry.host
    hosts.mkdir(parents=True)
    top = f"capabilities = {server_capabilities}\n" if server_capabilities else ""
    (hosts / "hosts.toml").write_text(
        f'server = "{registry.url}"\n{top}\n[host."{proxy.url}"]\n  capabilities = ["pull"]\n'
    )
    return str(hosts.parent)


def test_a_mirror_left_last_is_named_with_the_image_and_the_layer(cas, proxy, registry, image, tmp_path):
    """No endpoint to fall back to: the mirror's own naming, with the place in front."""
    env = {"CAS_HOSTS_DIR": _hosts(tmp_path, registry, proxy, server_capabilities='["resolve"]')}
    ref = f"{registry.host}/{REPO}:1"
    bad = image.layers[1].blob("oci").digest
    proxy.corrupt_answers(pattern=bad)

    proc = cas("pull", ref, env=env, check=False)

    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"error: layer 2/3 of {ref}: mirror {proxy.url} served wrong bytes for blob {bad}: "
        f"blob digest mismatch: expected {bad}, got sha256:"
    ), proc.stderr


def test_a_config_checked_in_memory_falls_back_from_a_mirror_serving_wrong_bytes(cas, proxy, registry, image, tmp_path):
    """As a blob does: the mirror is named in the fallback and the upstream's bytes are used."""
    env = {"CAS_HOSTS_DIR": _hosts(tmp_path, registry, proxy)}
    config = image.config_blob.digest
    proxy.corrupt_answers(pattern=config)

    out = cas("pull", "--json", "--platform", "linux/amd64", f"{registry.host}/{REPO}:1", env=env)

    pulled = json.loads(out.stdout)["images"][0]
    assert pulled["manifest"] == image.digest
    first = pulled["fallbacks"][0]
    assert (first["endpoint"], first["what"]) == (proxy.url, f"blob {config}")
    assert first["reason"].startswith(f"mirror {proxy.url} served wrong bytes for blob {config}: config digest")


def test_a_manifest_with_wrong_bytes_names_the_registry_and_the_image(cas, proxy, image):
    ref = f"{proxy.host}/{REPO}:1"
    proxy.corrupt_answers(pattern=f"/{REPO}/manifests/1$")  # by tag: checked against Docker-Content-Digest

    proc = cas("pull", ref, check=False)

    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"error: manifest of {ref}: registry {proxy.host} served wrong bytes: "
        f"manifest digest mismatch: expected {image.digest}, got sha256:"
    ), proc.stderr
