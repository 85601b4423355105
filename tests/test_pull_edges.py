"""`cas pull` at the edges a real registry and real processes produce: a manifest whose
descriptor sizes lie about a blob whose digest is right, and a pull that must wait for a prune
holding the store lock."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import images
from support.tools import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


def _lying_image(seed: int, delta: int) -> images.Image:
    """An image whose manifest gives its second layer ``delta`` bytes more than it has."""
    img = images.Image([images.random_layer(20_000, seed=seed), images.random_layer(150_000, seed=seed + 1)])
    img.manifest["layers"][1]["size"] += delta
    img.manifest_blob = images.Blob(images.canonical_json(img.manifest), img.manifest_blob.media_type)
    return img


@pytest.mark.parametrize("delta", [-1000, 1000], ids=["declared-smaller", "declared-larger"])
def test_a_wrong_descriptor_size_with_the_right_digest_is_refused(cas, cas_home, registry, delta):
    img = _lying_image(700 + (delta > 0), delta)
    ref = f"{registry.host}/lying-size:{'small' if delta < 0 else 'large'}"
    images.push(registry, ref.split("/", 1)[1].split(":")[0], ref.rsplit(":", 1)[1], img)
    layer = img.layers[1]

    proc = cas("pull", ref, check=False)
    assert proc.returncode == 1, proc.stderr
    first = re.fullmatch(
        rf"error: size mismatch for {layer.digest}: expected {layer.size + delta} bytes, got (\d+)",
        proc.stderr.splitlines()[0],
    )
    assert first, proc.stderr
    if delta > 0:  # the stream ended short: exactly what the registry has
        assert int(first[1]) == layer.size
    else:  # refused as soon as a chunk went past the declared size
        assert layer.size + delta < int(first[1]) <= layer.size
    assert proc.stderr.splitlines()[1].startswith("hint: ") and "Traceback" not in proc.stderr
    stored = {p.name for p in (cas_home / "v1" / "blobs" / "sha256").iterdir()}
    assert layer.digest[7:] not in stored
    assert json.loads(cas("images", "--json").stdout)["images"] == []
    # and a second attempt does not build on a poisoned partial download
    again = cas("pull", ref, check=False)
    assert again.returncode == 1 and again.stderr.startswith(f"error: size mismatch for {layer.digest}: ")
    assert layer.digest[7:] not in {p.name for p in (cas_home / "v1" / "blobs" / "sha256").iterdir()}


def _store_lock_held(home: Path) -> bool:
    fd = os.open(home / "v1" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_pull_waits_for_a_prune_holding_the_store_lock_then_succeeds(cas, cas_home, registry, test_images):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base)
    cas("rm", base)  # something for the prune to sweep
    env = {**os.environ, "CAS_HOME": str(cas_home)}
    # Hold the index's write lock, so the real prune below stops inside its index transaction,
    # holding the store lock exclusively for as long as this test wants.
    index_holder = sqlite3.connect(cas_home / "v1" / "index" / "cache.db", isolation_level=None)
    index_holder.execute("BEGIN IMMEDIATE")
    prune = subprocess.Popen(
        [sys.executable, "-m", "cli", "prune", "--json"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pull = None
    try:
        wait_until(lambda: _store_lock_held(cas_home), timeout=30, what="the prune to take the store lock")
        pull = subprocess.Popen(
            [sys.executable, "-m", "cli", "pull", app],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = pull.stderr.readline()  # blocks until the pull says something
        assert first == "waiting for another cas process to release the cas store...\n"
        assert prune.poll() is None and pull.poll() is None  # both still waiting
    finally:
        index_holder.execute("ROLLBACK")
        index_holder.close()
    pruned, prune_err = prune.communicate(timeout=60)
    assert prune.returncode == 0, prune_err
    assert json.loads(pruned)["freed_blobs"] == len(test_images.base.digests)  # app is not pulled yet
    rest, pull_err = pull.communicate(timeout=60)
    assert pull.returncode == 0, pull_err
    assert pull_err.startswith(f"{app}: ") and f"downloaded {len(test_images.app.digests)} blob(s)" in pull_err, (
        pull_err
    )
    assert [row["ref"] for row in json.loads(cas("images", "--json").stdout)["images"]] == [app]
