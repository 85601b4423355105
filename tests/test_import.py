"""cas import, end to end: archives written by cas, dockerd and skopeo into a fresh store, then out
again to a daemon whose image store was just emptied (docker skips layers it holds, which would
hide a missing layer file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cas_in(home: Path, *args, input=None, check=True, stdin=None):
    """cas with its own CAS_HOME: several stores in one test (the sender and the receiver)."""
    env = {**os.environ, "CAS_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        input=input,
        stdin=stdin,
        capture_output=True,
        env=env,
        cwd=REPO_ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cas {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return proc


def refs_of(home: Path) -> list[str]:
    return [row["ref"] for row in json.loads(cas_in(home, "images", "--json").stdout)]


def store_debris(home: Path) -> list[str]:
    ingest = home / "v1" / "ingest"
    return sorted(os.listdir(ingest)) if ingest.exists() else []


def test_round_trip_pull_export_import_export_loads_and_runs(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    first = tmp_path / "app.tar"
    cas("export", app, "-o", first)

    other = tmp_path / "store-b"
    out = json.loads(cas_in(other, "import", first, "--json").stdout)
    assert out["format"] == "docker-archive"
    assert out["images"][0]["refs"] == [app]
    assert out["images"][0]["manifest"] == test_images.app.digest  # the registry's own manifest
    assert out["stored_blobs"] == len(test_images.app.digests)
    assert refs_of(other) == [app]
    assert store_debris(other) == []

    registry.mark()
    second = tmp_path / "again.tar"
    cas_in(other, "export", app, "-o", second)
    assert registry.requests() == []
    with tarfile.open(first) as a, tarfile.open(second) as b:
        assert {m.name for m in a} == {m.name for m in b}

    assert f"Loaded image: {app}" in clean_dockerd.load(second).stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_import_from_stdin_of_every_cas_format(cas, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "dockermedia")
    cas("pull", ref)
    for fmt in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"{fmt}.tar"
        cas("export", ref, "--format", fmt, "-o", archive)
        home = tmp_path / f"from-{fmt}"
        with open(archive, "rb") as fh:
            out = json.loads(cas_in(home, "import", "-", "--json", stdin=fh).stdout)
        assert out["images"][0]["manifest"] == test_images.dockermedia.digest
        assert refs_of(home) == [ref]
        inspect = json.loads(cas_in(home, "inspect", ref, "--json").stdout)
        assert inspect["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
