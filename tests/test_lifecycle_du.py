"""cas du: sizes per image, shared vs unique bytes, reclaimable; and the CLI of rm/du/prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tools import store_lock_held
from test_lifecycle_support import APP, BASE, commit, store_three, write_raw

from cas import gc
from cas.disk_usage import usage
from cas.images import remove_images
from cas.store import Store


@pytest.fixture
def three(store: Store):
    return store_three(store)


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_du_splits_each_image_into_unique_and_shared(store, three):
    report = usage(store)
    by_ref = {i["ref"]: i for i in report["images"]}
    shared_layers = {str(b.digest): b.size for b in three[BASE].blobs[2:]}  # layers 1 and 2
    for ref, record in three.items():
        row = by_ref[ref]
        assert row["size"] == record.size
        expected_shared = sum(shared_layers.values()) if ref in (BASE, APP) else 0
        assert row["shared_bytes"] == expected_shared
        assert row["unique_bytes"] == record.size - expected_shared
    everything = {str(b.digest): b.size for r in three.values() for b in r.blobs}
    assert report["stored_blobs"] == len(everything)
    assert report["stored_bytes"] == sum(everything.values())
    assert report["referenced_bytes"] == sum(everything.values())
    assert report["shared_bytes"] == sum(shared_layers.values())
    assert report["reclaimable"]["size"] == 0


def test_du_reclaimable_is_what_prune_frees(store, three):
    commit(store, b"stray bytes" * 77, "application/octet-stream")
    remove_images(store, [APP])
    predicted = usage(store)["reclaimable"]
    result = gc.prune(store)
    assert predicted["size"] == result.freed_bytes > 0
    assert predicted["blob_count"] == len(result.blobs)
    assert usage(store)["reclaimable"]["size"] == 0


def test_cli_rm_du_prune_verify(store, three):
    home = store.home
    store.close()
    du = run_cli(home, "du", "--json")
    assert du.returncode == 0, du.stderr
    assert {i["ref"] for i in json.loads(du.stdout)["images"]} == set(three)
    text = run_cli(home, "du")
    assert text.returncode == 0 and APP in text.stdout and "reclaimable:" in text.stdout

    bad = run_cli(home, "rm", APP, "127.0.0.1:5000/nope:9")
    assert bad.returncode == 1
    assert "127.0.0.1:5000/nope:9" in bad.stderr and "hint:" in bad.stderr
    ok = run_cli(home, "rm", APP)
    assert ok.returncode == 0 and f"removed {APP}" in ok.stdout

    dry = run_cli(home, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would free" in dry.stdout and "would remove blob sha256:" in dry.stdout
    real = run_cli(home, "prune", "--json")
    assert real.returncode == 0, real.stderr
    freed = json.loads(real.stdout)
    assert freed["freed_blobs"] == 3 and freed["freed_bytes"] > 0

    keep = run_cli(home, "prune", "--keep-storage", "1KB")
    assert keep.returncode == 0 and "Freed" in keep.stdout and f"removed image {BASE}" in keep.stdout
    bad_size = run_cli(home, "prune", "--keep-storage", "lots")
    assert bad_size.returncode == 2 and "500MiB" in bad_size.stderr
    bad_age = run_cli(home, "prune", "--older-than", "a week")
    assert bad_age.returncode == 2 and "7d" in bad_age.stderr

    clean = run_cli(home, "verify")
    assert clean.returncode == 0 and "ok" in clean.stdout
    everything = run_cli(home, "prune", "--all", "--json")
    kept = json.loads(everything.stdout)
    assert (kept["kept_images"], kept["kept_blobs"], kept["kept_bytes"]) == (0, 0, 0)


def test_images_skips_malformed_records_and_inspect_names_them(store, three):
    no_digest = "127.0.0.1:5000/nodigest:1"
    record = three[BASE].replace(ref=no_digest).to_json()
    del record["digest"]
    write_raw(store, f"ref:{no_digest}|linux/amd64", record)
    write_raw(store, "ref:127.0.0.1:5000/broken:1", {"ref": "x"})
    write_raw(store, "ref:127.0.0.1:5000/odd:1", ["not", "a", "record"])
    home = store.home
    store.close()

    listed = run_cli(home, "images")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert (
        all(ref in listed.stdout for ref in three) and "nodigest" not in listed.stdout and "broken" not in listed.stdout
    )
    assert (
        "skipped 3 malformed image record(s): 127.0.0.1:5000/broken:1, 127.0.0.1:5000/nodigest:1, 127.0.0.1:5000/odd:1"
        in listed.stderr
    )
    as_json = run_cli(home, "images", "--json")
    assert as_json.returncode == 0 and [row["ref"] for row in json.loads(as_json.stdout)["images"]] == sorted(three)

    for ref in (no_digest, "127.0.0.1:5000/broken:1", "127.0.0.1:5000/odd:1"):
        shown = run_cli(home, "inspect", ref)
        assert shown.returncode == 1 and "Traceback" not in shown.stderr
        error, hint = shown.stderr.splitlines()
        assert error.startswith(f"error: the index record of {ref} is malformed: ")
        assert hint == f"hint: run `cas rm {ref}`, then `cas pull {ref}`"
    assert run_cli(home, "inspect", BASE).returncode == 0

    removed = run_cli(home, "rm", no_digest, "127.0.0.1:5000/broken:1", "127.0.0.1:5000/odd:1")
    assert removed.returncode == 0 and "Traceback" not in removed.stderr, removed.stderr
    clean = run_cli(home, "images")
    assert clean.returncode == 0 and clean.stderr == ""


def test_prune_and_verify_take_the_shared_lock_timeout_option(store, three):
    home = store.home
    store.close()
    with store_lock_held(home, shared=True):
        for args, env in (
            (("prune", "--lock-timeout", "0.2"), {}),
            (("verify", "--repair"), {"CAS_LOCK_TIMEOUT": "0.2"}),
        ):
            proc = subprocess.run(
                [sys.executable, "-m", "cli", *args],
                env={**os.environ, "CAS_HOME": str(home), **env},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert proc.returncode == 1, (args, proc.stderr)
            assert "timed out" in proc.stderr and "--lock-timeout" in proc.stderr and "Traceback" not in proc.stderr
    for command in ("prune", "verify"):
        assert run_cli(home, command, "--lock-timeout", "-1").returncode == 2
        assert "CAS_LOCK_TIMEOUT" in run_cli(home, command, "--help").stdout
