"""Failure edges of the store, each with real cas commands against the
real registry: a clean failure leaves nothing verify calls damage, a killed split download is
reported by what its recorded ranges hold, a byte changed with its mtime put back is still seen
(ctime), and a blob that was only touched is never downloaded again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from support import images
from support.tools import cas_in_background, wait_until


def _blob_path(home: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":")
    return home / "v1" / "blobs" / algorithm / hexpart


def test_a_pull_failing_on_wrong_bytes_leaves_no_ingest_entry_and_verify_is_clean(cas, cas_home, registry, test_images):
    layer = test_images.app.blobs[-1]
    registry.corrupt_blob(layer.digest)
    failed = cas("pull", test_images.ref(registry, "app"), check=False)
    assert failed.returncode == 1 and "digest mismatch" in failed.stderr
    ingest = cas_home / "v1" / "ingest"
    left = sorted(ingest.iterdir()) if ingest.exists() else []
    assert f"sha256-{layer.digest[7:]}" not in [p.name for p in left]  # its bytes were dropped: nothing to resume
    empty = [p.name for p in left if not (p / "data").exists() or (p / "data").stat().st_size == 0]
    assert empty == []  # another layer, cancelled mid-way, may keep the bytes it had: that one is resumable
    checked = cas("verify", "--json", check=False)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["findings"] == [], report["findings"]
    assert sorted(r["path"] for r in report["resumable"]) == [f"ingest/{p.name}" for p in left]


def _recorded(entry: Path) -> int:
    """Bytes the entry's ranges.json says are held (0 without a record)."""
    try:
        doc = json.loads((entry / "ranges.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return 0
    return sum(end - start for start, end in doc["held"])


def test_a_killed_split_download_is_reported_by_the_bytes_its_ranges_hold(cas, cas_home, registry, proxy):
    big = images.Image([images.random_layer(40 << 20, seed=2005)])
    images.push(registry, "cas-test/split-killed", "1", big)
    layer = big.layers[0].blob("oci")
    entry = cas_home / "v1" / "ingest" / f"sha256-{layer.digest[7:]}"
    proxy.throttle(2_000_000)  # per connection: the 4 MiB probe finds the link capped, so the blob is split
    victim = cas_in_background(cas_home, "pull", f"{proxy.host}/cas-test/split-killed:1")

    def ranges_behind_the_file() -> bool:  # ranges in flight: the file reaches past what the record names
        recorded = _recorded(entry)
        return recorded > 0 and (entry / "data").stat().st_size > recorded + (1 << 20)

    try:
        wait_until(ranges_behind_the_file, timeout=90, what="a split download with ranges in flight")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    proxy.throttle(None)
    recorded, on_disk = _recorded(entry), (entry / "data").stat().st_size
    assert 0 < recorded < on_disk

    report = json.loads(cas("verify", "--json").stdout)
    [resumable] = report["resumable"]
    assert resumable["digest"] == layer.digest
    assert resumable["partial_bytes"] == recorded, (resumable, recorded, on_disk)
    assert json.loads(cas("du", "--json").stdout)["download_bytes"] == on_disk  # du counts the disk it takes


def test_a_byte_changed_with_its_mtime_put_back_is_still_seen_by_its_ctime(
    cas, cas_home, registry, test_images, tmp_path
):
    ref = test_images.ref(registry, "app")
    cas("pull", ref)
    layer = test_images.app.blobs[4].digest
    path = _blob_path(cas_home, layer)
    before = os.stat(path)
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns  # only the ctime tells

    out = tmp_path / "app.tar"
    proc = cas("export", ref, "-o", out, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{layer} (layer 4/5 of {ref}): content changed since commit" in proc.stderr
    assert not out.exists()


def test_a_touched_blob_is_never_downloaded_again(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "app")
    cas("pull", ref)
    config, layer = test_images.app.blobs[0].digest, test_images.app.blobs[4].digest
    for digest in (config, layer):  # same bytes, new mtime (and ctime)
        path = _blob_path(cas_home, digest)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    registry.mark()
    pulled = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert pulled["downloaded_bytes"] == 0 and pulled["downloaded_blobs"] == 0, pulled
    assert registry.blob_gets() == []
    assert json.loads(cas("verify", "--json").stdout)["ok"] is True
