"""`cas prune --all` started while `cas export --pull` is mid-download, with real processes.

What protects the running transfer is the store lock (the prune waits for the export's shared
lock) and, behind it, the leases (a running pull's digests are GC roots). Whatever the order
they end up running in, the export must be complete and load on an empty daemon, and the
prune must take an image whole or not at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.tools import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_prune_all_during_a_held_download_leaves_the_export_complete(
    cas, cas_home, proxy, registry, test_images, clean_dockerd, tmp_path
):
    test_images.push(registry)
    app = test_images.app
    ref = f"{proxy.host}/app:latest"
    proxy.throttle(300_000)  # the busybox layer alone takes a few seconds
    env = {**os.environ, "CAS_HOME": str(cas_home)}
    archive = tmp_path / "app.tar"
    export = subprocess.Popen(
        [sys.executable, "-m", "cli", "export", "--pull", "--json", ref, "-o", str(archive)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blobs = cas_home / "v1" / "blobs" / "sha256"
    ingest = cas_home / "v1" / "ingest"
    wait_until(
        lambda: (blobs / app.digest[7:]).exists() and any(p.stat().st_size for p in ingest.glob("*/data")),
        timeout=60,
        what="the manifest committed and a layer half downloaded",
    )
    prune = subprocess.Popen(
        [sys.executable, "-m", "cli", "prune", "--all", "--json"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert export.poll() is None, "the download was not held: the test proves nothing"

    exported, export_err = export.communicate(timeout=120)
    assert export.returncode == 0, export_err
    assert json.loads(exported)["pulled_refs"] == [ref]
    pruned, prune_err = prune.communicate(timeout=120)
    assert prune.returncode == 0, prune_err

    freed = {b["digest"] for b in json.loads(pruned)["blobs"]}
    assert freed in (set(), set(app.digests)), "the prune took part of an image"
    loaded = clean_dockerd.load(archive)
    assert f"Loaded image: {ref}" in loaded.stdout, loaded.stdout + loaded.stderr
    assert clean_dockerd.run(ref).stdout == "hello from app\n"
    assert json.loads(cas("verify", "--json").stdout)["ok"]
