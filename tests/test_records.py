"""RefRecord: validated once when read, written once, keyed by (reference, platform); pre-platform keys
moved once when the index opens."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_lifecycle_support import APP, BASE, images, store_image, write_raw

from cas import gc
from cas.errors import DiskFull, StoreError
from cas.images import list_images
from cas.metadata import Metadata
from cas.metadata_sqlite import schema_version, set_schema_version
from cas.records import RefRecord, key_of, legacy_key, platforms_key
from cas.store import Store


@pytest.fixture
def app(store: Store) -> RefRecord:
    return store_image(store, APP, images({"app": [1, 2]})["app"])


def test_round_trip_and_key(store: Store, app: RefRecord) -> None:
    assert app.key == f"ref:{APP}|linux/amd64"
    assert RefRecord.from_json(json.loads(json.dumps(app.to_json())), app.key) == app
    assert store.metadata.get_ref(APP, "linux/amd64") == app
    assert store.metadata.get_ref(APP, "linux/arm64/v8") is None
    assert app.size == sum(b.size for b in app.unique_blobs.values())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("digest"), "invalid digest"),
        (lambda d: d.update(manifest="sha256:" + "0" * 63), "expected 64"),
        (lambda d: d.update(blobs=[{"digest": "sha256:" + "a" * 64}]), "bad blob entry"),
        (lambda d: d.update(blobs=d["blobs"][1:]), "does not list its manifest"),
        (lambda d: d.update(pulled="yesterday"), "no pull time"),
        (lambda d: d.update(platform="linux|amd64"), "bad platform"),
        (lambda d: d.update(ref="127.0.0.1:5000/other:1"), "it names 127.0.0.1:5000/other:1"),
    ],
)
def test_damaged_record_is_a_store_error_naming_it(store: Store, app: RefRecord, change, why: str) -> None:
    value = app.to_json()
    change(value)
    write_raw(store, app.key, value)
    with pytest.raises(StoreError) as info:
        store.metadata.get_ref(APP, "linux/amd64")
    assert info.value.message.startswith(f"the index record of {APP} is malformed: ") and why in info.value.message
    assert info.value.hint == f"run `cas rm {APP}`, then `cas pull {APP}`"
    malformed: list[str] = []
    assert list(store.metadata.refs(malformed)) == [] and malformed == [app.key]
    with pytest.raises(StoreError):
        store.metadata.ref_records(APP)  # its own damage is its error...


def test_another_references_damage_is_not_this_ones_error(store: Store, app: RefRecord) -> None:
    write_raw(store, key_of(BASE, "linux/amd64"), {"nonsense": True})
    assert store.metadata.ref_records(APP) == [app]  # ...another's is not
    with pytest.raises(StoreError):
        list(store.metadata.refs())


def _as_before_platforms(store: Store, *records: RefRecord) -> None:
    """The index as an older cas left it: records under ``ref:<ref>``, layout version 0."""
    for record in records:
        store.metadata.remove_ref(record)
        write_raw(store, legacy_key(record.ref), record.to_json())
    set_schema_version(store.metadata._db, 0)


def test_a_pre_platform_record_moves_to_its_platform_key_once_when_the_index_opens(
    store: Store, app: RefRecord
) -> None:
    base = store_image(store, BASE, images({"base": [1]})["base"])
    _as_before_platforms(store, app, base)
    store.metadata.put_ref(base.replace(used=5000.0))  # a newer record of the same platform wins over the old one

    again = Metadata(store.metadata.path)
    try:
        assert sorted(key for key, _ in again.scan("ref:")) == sorted([app.key, base.key])
        assert again.get_ref(APP, "linux/amd64") == app and again.ref_records(APP) == [app]
        assert again.get_ref(BASE, "linux/amd64").used == 5000.0
        assert again.get_ref(APP, "linux/arm64/v8") is None
    finally:
        again.close()
    assert set(gc.snapshot(store).images) == {app.key, base.key}
    assert sorted(row["ref"] for row in list_images(store)) == sorted([APP, BASE])
    store.metadata.put_ref(app.replace(platform="linux/arm64/v8"))
    assert [r.platform for r in store.metadata.ref_records(APP)] == ["linux/amd64", "linux/arm64/v8"]


def test_a_damaged_pre_platform_record_stays_for_verify_to_report(store: Store, app: RefRecord) -> None:
    store.metadata.remove_ref(app)
    write_raw(store, legacy_key(APP), {"nonsense": True})
    set_schema_version(store.metadata._db, 0)
    again = Metadata(store.metadata.path)
    try:
        malformed: list[str] = []
        assert list(again.refs(malformed)) == [] and malformed == [legacy_key(APP)]
    finally:
        again.close()


def test_two_platforms_are_two_images_to_gc(store: Store, app: RefRecord) -> None:
    store.metadata.put_ref(app.replace(platform="linux/arm64/v8"))
    snap = gc.snapshot(store)
    assert sorted(snap.images) == [app.key, key_of(APP, "linux/arm64/v8")]
    assert [(row["ref"], row["platform"]) for row in list_images(store)] == [
        (APP, "linux/amd64"),
        (APP, "linux/arm64/v8"),
    ]


BROKEN = "127.0.0.1:5000/broken:1"


def _as_tagged_by_reference(store: Store, *records: RefRecord) -> None:
    """The index as cas left it at layout 2: each record found through diskcache's tag column (the
    reference), no ``platforms:`` entries, and a damaged record of another reference, tagged too."""
    for record in records:
        store.metadata.remove_ref(record)
    for record in records:
        store.metadata._db.set(record.key, record.to_json(), tag=record.ref)
    store.metadata._db.set(key_of(BROKEN, "linux/amd64"), {"nonsense": True}, tag=BROKEN)
    set_schema_version(store.metadata._db, 2)
    assert not any(key.startswith("platforms:") for key in store.metadata._db.iterkeys())


def test_a_layout_2_index_lists_each_references_platforms_as_data_once_when_it_opens(
    store: Store, app: RefRecord
) -> None:
    arm = app.replace(platform="linux/arm64/v8")
    base = store_image(store, BASE, images({"base": [1]})["base"])
    _as_tagged_by_reference(store, app, arm, base)

    again = Metadata(store.metadata.path)
    try:
        assert schema_version(again._db) == 3
        assert again._db.get(platforms_key(APP)) == ["linux/amd64", "linux/arm64/v8"]
        assert again.ref_records(APP) == [app, arm] and again.ref_records(BASE) == [base]
        with pytest.raises(StoreError):
            again.ref_records(BROKEN)  # damage stays its reference's error, as it was with the tag
    finally:
        again.close()
    with sqlite3.connect(store.metadata.path / "cache.db") as con:
        assert con.execute("SELECT count(*) FROM Cache WHERE tag IS NOT NULL").fetchone() == (0,)

    env = {**os.environ, "CAS_HOME": str(store.home)}
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run([sys.executable, "-m", "cli", "inspect", APP], env=env, cwd=root, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    for ref in (APP, BROKEN):  # a record, and a damaged one (dropped by its key): each unlisted with it
        removed = subprocess.run([sys.executable, "-m", "cli", "rm", ref], env=env, cwd=root, capture_output=True)
        assert removed.returncode == 0, removed.stderr
        assert store.metadata.ref_records(ref) == [] and store.metadata._db.get(platforms_key(ref)) is None


def test_an_index_a_full_disk_left_in_layout_2_still_finds_a_references_records(
    store: Store, app: RefRecord, monkeypatch
) -> None:
    _as_tagged_by_reference(store, app)

    def no_room(self: Metadata) -> None:
        raise DiskFull("no space left on device", hint="free disk space")

    monkeypatch.setattr(Metadata, "_migrate", no_room)
    stuck = Metadata(store.metadata.path)
    try:
        assert not stuck.current and stuck.ref_records(APP) == [app]  # found by a scan
    finally:
        stuck.close()
    monkeypatch.undo()
    again = Metadata(store.metadata.path)  # room again: moved at this open
    try:
        assert again.current and again.ref_records(APP) == [app]
        assert again._db.get(platforms_key(APP)) == ["linux/amd64"]
    finally:
        again.close()


def test_records_forgotten_together_leave_their_references_lists_right(store: Store, app: RefRecord) -> None:
    arm = app.replace(platform="linux/arm64/v8")
    store.metadata.put_ref(arm)
    base = store_image(store, BASE, images({"base": [1]})["base"])
    assert store.metadata.remove_refs([app, base]) == 2  # as an eviction forgets them
    assert store.metadata._db.get(platforms_key(APP)) == ["linux/arm64/v8"]
    assert store.metadata._db.get(platforms_key(BASE)) is None
    assert store.metadata.ref_records(APP) == [arm] and store.metadata.ref_records(BASE) == []
