"""`cas verify` and resumable downloads: a partial download the next pull
resumes is not damage. verify lists it as resumable (size, age) and exits 0; --repair and prune
keep it; only downloads nobody can resume (unreadable, empty, untouched for RESUMABLE_FOR) are
stale. The partial download is made the real way: a pull killed mid-blob behind the fault proxy.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from support.tools import cas_in_background, wait_until

from cas.store.ingest import RESUMABLE_FOR


@pytest.fixture
def partial(cas_home, proxy, registry, test_images):
    """A pull of base killed with SIGKILL while its busybox layer streams; returns (ref, ingest entry)."""
    test_images.push(registry)
    ref = f"{proxy.host}/base:latest"
    proxy.throttle(200_000)
    victim = cas_in_background(cas_home, "pull", "--jobs", "1", ref)
    ingest = cas_home / "v1" / "ingest"

    def entries() -> list[Path]:
        return [p.parent for p in ingest.glob("*/data") if p.stat().st_size > 50_000] if ingest.exists() else []

    wait_until(lambda: entries(), timeout=30, what="a partial download")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    proxy.throttle(None)
    [entry] = entries()
    return ref, entry


def test_a_resumable_download_is_reported_as_such_and_kept(cas, cas_home, partial, proxy):
    ref, entry = partial
    size = (entry / "data").stat().st_size
    checked = cas("verify", "--json", check=False)
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert report["ok"] is True and report["findings"] == []
    [resumable] = report["resumable"]
    assert resumable["digest"] == "sha256:" + entry.name.split("-", 1)[1]
    assert resumable["partial_bytes"] == size and 0 <= resumable["age_seconds"] < 600
    assert resumable["modified_at"].endswith("Z") and resumable["path"] == f"ingest/{entry.name}"

    human = cas("verify")
    assert "resumable: sha256:" in human.stdout and "the next `cas pull` resumes it" in human.stdout

    assert cas("verify", "--repair", check=False).returncode == 0
    assert json.loads(cas("prune", "--json").stdout)["freed_stale_downloads"] == 0
    assert (entry / "data").stat().st_size == size  # kept by both

    mark = len(proxy.requests)
    cas("pull", ref)
    ranged = [r for r in proxy.requests[mark:] if "range" in r.headers]
    assert ranged and ranged[0].status == 206  # and the pull did resume it
    assert json.loads(cas("verify", "--json").stdout)["resumable"] == []


def test_downloads_nobody_can_resume_are_stale_for_verify_and_prune_alike(cas, cas_home, partial):
    _, entry = partial
    old = time.time() - RESUMABLE_FOR - 86400
    os.utime(entry / "data", (old, old))
    report = json.loads(cas("verify", "--json", check=False).stdout)
    assert report["ok"] is False and report["resumable"] == []
    [stale] = report["findings"]
    assert stale["kind"] == "stale-ingest" and "untouched for 8 days (resumable for 7 days)" in stale["detail"]
    assert json.loads(cas("prune", "--dry-run", "--json").stdout)["freed_stale_downloads"] == 1

    os.utime(entry / "data")  # fresh again, but unreadable: its data is a symlink now
    (entry / "data").rename(entry / "elsewhere")
    (entry / "data").symlink_to(entry / "elsewhere")
    report = json.loads(cas("verify", "--json", check=False).stdout)
    assert [f["detail"].rsplit(": ", 1)[1] for f in report["findings"]] == ["its data cannot be read"]
    pruned = json.loads(cas("prune", "--json").stdout)
    assert pruned["freed_stale_downloads"] == 1 and not entry.exists()
    assert cas("verify", check=False).returncode == 0


def test_prune_all_empties_the_store_resumable_downloads_included(cas, partial):
    _, entry = partial
    assert json.loads(cas("prune", "--all", "--json").stdout)["freed_stale_downloads"] == 1
    assert not entry.exists()
