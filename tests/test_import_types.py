"""An import cut short must not leave blobs typed by a guess.

An import commits each blob as it arrives, before the archive's end (``index.json``) says
what the blob is. Each reproduction below stops an import of real cas exports, from a real
registry, after every blob has arrived and before the end: a truncated stream, a SIGKILL,
and a pull by digest while the import still runs. Each is followed by a pull by digest, a
push and ``verify --deep``, as a user would go on. A store an older cas poisoned is
reported by ``verify`` and mended by ``--repair``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from cas.digest import Digest
from cas.metadata import Metadata

REPO_ROOT = Path(__file__).resolve().parent.parent
OCTETS = "application/octet-stream"  # the guess an import cut short left in the store


def _exported(cas, registry, test_images, tmp_path, name: str) -> tuple[str, bytes, int]:
    """Pull ``name`` (every platform), export it, empty the store: (its reference, the archive, the
    offset where index.json starts, after every blob)."""
    ref = test_images.ref(registry, name)
    cas("pull", "--all-platforms", ref)
    archive = tmp_path / f"{name}.tar"
    cas("export", ref, "--format", "oci-archive", "-o", archive)  # every platform, under the index
    cas("prune", "--all")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    offset = next(m.offset for m in members if m.name == "index.json")
    assert {m.name for m in members if m.offset < offset} >= {
        f"blobs/sha256/{d[7:]}" for d in _digests(test_images, name)
    }
    return ref, archive.read_bytes(), offset


def _digests(test_images, name: str) -> list[str]:
    obj = test_images[name]
    children = getattr(obj, "images", None)
    if children is None:
        return obj.digests
    return [d for child in children for d in child.digests]  # the index is cas's own, narrowed to them


def _by_digest(ref: str, digest: str) -> str:
    return f"{ref.rsplit(':', 1)[0]}@{digest}"


def _goes_on(cas, registry, ref: str, digest: str, copy: str) -> None:
    """What a user does next: a pull by digest, a push of it, and a deep verify, each exiting 0."""
    source = _by_digest(ref, digest)
    pulled = cas("pull", source, check=False)
    assert pulled.returncode == 0, pulled.stderr
    pushed = cas("push", source, f"{registry.host}/typed/{copy}:1", check=False)
    assert pushed.returncode == 0, pushed.stderr
    checked = cas("verify", "--deep", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok: no problems found" in checked.stdout


def _importer(cas_home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "import", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CAS_HOME": str(cas_home)},
        cwd=REPO_ROOT,
    )


def _wait_recorded(cas_home: Path, digests: list[str], importer: subprocess.Popen) -> None:
    """Until the running import has committed every one of ``digests`` and written its index record."""
    index = Metadata(cas_home / "v1" / "index")
    try:
        deadline = time.monotonic() + 60
        while any(index.get_blob(Digest.parse(digest)) is None for digest in digests):
            assert importer.poll() is None, importer.communicate()
            assert time.monotonic() < deadline, f"the import did not commit {digests}"
            time.sleep(0.05)
    finally:
        index.close()


@pytest.mark.parametrize("name", ["dockermedia", "multi"])
def test_a_truncated_import_then_pull_push_verify(cas, cas_home, registry, test_images, tmp_path, name):
    ref, data, offset = _exported(cas, registry, test_images, tmp_path, name)
    cut = cas("import", "-", input=data[:offset], check=False)
    assert cut.returncode == 1 and "not an image archive" in cut.stderr

    if name == "multi":  # an index among the blobs: even a plain tag pull read a guessed child type
        tagged = cas("pull", ref, check=False)
        assert tagged.returncode == 0, tagged.stderr
    _goes_on(cas, registry, ref, test_images[name].digest, f"{name}-cut")

    cas("prune", "--all")  # once more, now followed by a full import of the same archive
    assert cas("import", "-", input=data[:offset], check=False).returncode == 1
    cas("import", "-", input=data)
    _goes_on(cas, registry, ref, test_images[name].digest, f"{name}-whole")


def test_an_import_killed_after_every_blob_then_pull_push_verify(cas, cas_home, registry, test_images, tmp_path):
    ref, data, offset = _exported(cas, registry, test_images, tmp_path, "dockermedia")
    importer = _importer(cas_home)
    try:
        importer.stdin.write(data[:offset])
        importer.stdin.flush()
        _wait_recorded(cas_home, test_images.dockermedia.digests, importer)  # every blob: it waits for the end
    finally:
        importer.send_signal(signal.SIGKILL)
        importer.communicate()
    assert importer.returncode == -signal.SIGKILL
    _goes_on(cas, registry, ref, test_images.dockermedia.digest, "killed")


def test_a_pull_by_digest_while_an_import_of_the_image_runs(cas, cas_home, registry, test_images, tmp_path):
    ref, data, offset = _exported(cas, registry, test_images, tmp_path, "dockermedia")
    digest = test_images.dockermedia.digest
    importer = _importer(cas_home)
    try:
        importer.stdin.write(data[:offset])
        importer.stdin.flush()
        _wait_recorded(cas_home, test_images.dockermedia.digests, importer)
        pulled = cas("pull", _by_digest(ref, digest), check=False)
        assert pulled.returncode == 0, pulled.stderr
        _, stderr = importer.communicate(data[offset:], timeout=120)
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.communicate()
    assert importer.returncode == 0, stderr
    _goes_on(cas, registry, ref, digest, "concurrent")


def test_verify_reports_and_repair_mends_a_type_an_older_import_guessed(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "multidocker")
    cas("pull", "--all-platforms", ref)
    poisoned = [test_images.multidocker.digest, test_images.multidocker.for_platform("linux/arm64/v8").digest]
    index = Metadata(cas_home / "v1" / "index")
    try:
        for digest in map(Digest.parse, poisoned):  # as an import cut short by an older cas left them
            record = index.get_blob(digest)
            index.put_blob(
                digest, size=record["size"], media_type=OCTETS, fingerprint=record["blake3"], stat=record["stat"]
            )
    finally:
        index.close()

    found = cas("verify", "--json", check=False)
    assert found.returncode == 1
    findings = json.loads(found.stdout)["findings"]
    assert sorted((f["kind"], f["what"]) for f in findings) == sorted(("wrong-type", d) for d in poisoned)
    wrong = {f["what"]: f for f in findings}
    assert wrong[poisoned[0]]["detail"] == (
        f"recorded as {OCTETS}, but it is application/vnd.docker.distribution.manifest.list.v2+json"
    )
    assert wrong[poisoned[1]]["refs"] == [f"{ref} (linux/arm64/v8)"]

    repaired = json.loads(cas("verify", "--repair", "--json", check=False).stdout)
    assert {f["what"]: f["repaired"] for f in repaired["findings"]} == {
        poisoned[0]: "recorded as application/vnd.docker.distribution.manifest.list.v2+json",
        poisoned[1]: "recorded as application/vnd.docker.distribution.manifest.v2+json",
    }
    assert "ok: no problems found" in cas("verify", "--deep").stdout
    pushed = cas("push", "--platform", "linux/arm64/v8", ref, f"{registry.host}/typed/repaired:1", check=False)
    assert pushed.returncode == 0, pushed.stderr
