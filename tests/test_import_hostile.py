"""Hostile and broken archives: each is one error line (plus a hint), nothing is recorded, nothing
is written outside the store, and no ingest entry is left behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from support import images


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _assert_refused(cas, cas_home: Path, archive: Path, *expected: str) -> str:
    proc = cas("import", archive, check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[0].startswith("error: ") and all(text in lines[0] for text in expected), proc.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(cas("images", "--json").stdout)["images"] == []
    ingest = cas_home / "v1" / "ingest"
    assert not ingest.exists() or os.listdir(ingest) == []
    return lines[0]


LAYER = b"some layer bytes"
INDEX = json.dumps({"schemaVersion": 2, "manifests": []}).encode()


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([_file("../escaped", b"x")], "contains '..'"),
        ([_file("blobs/../../escaped", b"x")], "contains '..'"),
        ([_file("/tmp/cas-absolute-escape", b"x")], "absolute"),
        ([_link("blobs/sha256/evil", "../../../../escaped")], "points outside the archive"),
        ([_link("evil", "/etc/passwd")], "absolute path"),
        ([_link("evil", "../escaped", tarfile.LNKTYPE)], "hard link"),
        ([_link("evil", "/etc/passwd", tarfile.LNKTYPE)], "hard link"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink-outside",
        "symlink-absolute",
        "hardlink-dotdot",
        "hardlink-abs",
    ],
)
def test_unsafe_member_names_and_links(cas, cas_home, tmp_path, members, expected):
    work = tmp_path / "work"
    work.mkdir()
    archive = _tar(tmp_path / "evil.tar", [*members, _file("index.json", INDEX)])
    _assert_refused(cas, cas_home, archive, expected)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/cas-absolute-escape").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cas-home", "docker-config", "evil.tar", "work"]


def test_member_whose_bytes_do_not_match_the_digest_its_name_claims(cas, cas_home, tmp_path):
    claimed = hashlib.sha256(b"what the name promises").hexdigest()
    archive = _tar(tmp_path / "forged.tar", [_file(f"blobs/sha256/{claimed}", LAYER), _file("index.json", INDEX)])
    _assert_refused(cas, cas_home, archive, f"blobs/sha256/{claimed}", "do not match")
    assert not (cas_home / "v1" / "blobs" / "sha256" / claimed).exists()


def test_legacy_layer_whose_name_claims_another_digest(cas, cas_home, tmp_path):
    claimed = hashlib.sha256(b"another layer").hexdigest()
    archive = _tar(tmp_path / "forged.tar", [_file(f"{claimed}.tar", LAYER)])
    _assert_refused(cas, cas_home, archive, f"{claimed}.tar", "not the one its name claims")


def test_truncated_archive(cas, cas_home, registry, test_images, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    full = tmp_path / "app.tar"
    cas("export", app, "-o", full)
    data = full.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    receiver = tmp_path / "receiver"
    env = {"CAS_HOME": str(receiver)}
    proc = cas("import", cut, check=False, env=env)
    assert (
        proc.returncode == 1 and proc.stderr.startswith("error: cannot import") and "ends in the middle" in proc.stderr
    )
    assert json.loads(cas("images", "--json", env=env).stdout)["images"] == []
    assert os.listdir(receiver / "v1" / "ingest") == []


def test_ten_gigabyte_manifest_json_is_refused_without_reading_it(cas, cas_home, tmp_path):
    info = tarfile.TarInfo("manifest.json")
    info.size = 10 * 1024**3
    archive = tmp_path / "huge.tar"
    archive.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT) + b"[" * 4096)  # the rest never comes
    _assert_refused(cas, cas_home, archive, "manifest.json is 10737418240 bytes", "refusing")


@pytest.mark.parametrize("what", ["not-a-tar", "no-image", "bad-json"])
def test_not_an_image_archive(cas, cas_home, tmp_path, what):
    archive = tmp_path / "x.tar"
    if what == "not-a-tar":
        archive.write_bytes(b"hello, this is not a tar archive at all" * 20)
        expected = "not a tar archive"
    elif what == "no-image":
        _tar(archive, [_file("README", b"hi")])
        expected = "not an image archive"
    else:
        _tar(archive, [_file("manifest.json", b"[{")])
        expected = "manifest.json is not valid JSON"
    _assert_refused(cas, cas_home, archive, expected)


def test_incomplete_archive_names_every_missing_blob_and_records_nothing(
    cas, cas_home, registry, test_images, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    full = tmp_path / "app.tar"
    cas("export", app, "-o", full)
    dropped = [test_images.app.layers[1].digest, test_images.app.layers[3].digest]
    partial = tmp_path / "partial.tar"
    with tarfile.open(full) as src, tarfile.open(partial, "w") as dst:
        for member in src:
            if member.name.removeprefix("blobs/sha256/") not in {d[7:] for d in dropped}:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    receiver = tmp_path / "receiver"
    env = {"CAS_HOME": str(receiver)}
    proc = cas("import", partial, check=False, env=env)
    assert proc.returncode == 1
    assert "2 blob(s) neither in the archive nor in the store" in proc.stderr
    assert f"{dropped[0]} (layer 2/5 of {app})" in proc.stderr
    assert f"{dropped[1]} (layer 4/5 of {app})" in proc.stderr
    assert json.loads(cas("images", "--json", env=env).stdout)["images"] == []
    assert os.listdir(receiver / "v1" / "ingest") == []
    # the same archive completes once the store holds the missing layers
    cas("pull", test_images.ref(registry, "base"), env=env)
    assert cas("import", partial, check=False, env=env).returncode == 1  # layer 4 is app's own
    cas("pull", app, env=env)
    cas("rm", app, env=env)
    cas("import", partial, env=env)
    assert app in {row["ref"] for row in json.loads(cas("images", "--json", env=env).stdout)["images"]}


def test_layout_directory_with_a_symlink_out_is_refused_unread(cas, cas_home, tmp_path):
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "index.json").write_bytes(INDEX)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    secret = tmp_path / "secret"
    secret.write_text("not for the store")
    (layout / "blobs" / "sha256" / hashlib.sha256(b"not for the store").hexdigest()).symlink_to(secret)
    _assert_refused(cas, cas_home, layout, "points to an absolute path")
    assert not any((cas_home / "v1").rglob(hashlib.sha256(b"not for the store").hexdigest()))


def test_a_delta_naming_a_blob_that_is_no_index_as_its_images_index(cas, cas_home, tmp_path):
    image = images.Image([images.layer({"hello.txt": "hello\n"})])
    blobs = [image.manifest_blob, image.config_blob, *(layer.blob(image.media) for layer in image.layers)]
    description = {
        "format": 1,
        "images": [
            {
                "ref": "127.0.0.1:5000/forged:1",
                "digest": image.config_blob.digest,  # claims the config is the index the name resolved to
                "manifest": image.digest,
                "media_type": image.media_type,
                "platform": image.platform,
            }
        ],
        "blobs": [{"digest": blob.digest, "size": blob.size} for blob in blobs],
        "requires": [],
    }
    members = [_file("cas-delta.json", json.dumps(description).encode())]
    members += [_file(f"blobs/sha256/{blob.digest[7:]}", blob.data) for blob in blobs]
    _assert_refused(cas, cas_home, _tar(tmp_path / "forged.delta", members), image.config_blob.digest, "not an index")


def test_a_delta_that_neither_carries_nor_requires_a_layer_is_refused(cas, cas_home, tmp_path):
    """``requires`` is the sender's word; the receiver still checks every layer."""
    image = images.Image([images.layer({"one.txt": "one\n"}), images.layer({"two.txt": "two\n"})])
    dropped = image.layers[1].blob(image.media)
    carried = [image.manifest_blob, image.config_blob, image.layers[0].blob(image.media)]
    description = {
        "format": 1,
        "images": [
            {
                "ref": "127.0.0.1:5000/forged:1",
                "digest": image.digest,
                "manifest": image.digest,
                "media_type": image.media_type,
                "platform": image.platform,
            }
        ],
        "blobs": [{"digest": blob.digest, "size": blob.size} for blob in carried],
        "requires": [],  # the second layer is in neither list
    }
    members = [_file("cas-delta.json", json.dumps(description).encode())]
    members += [_file(f"blobs/sha256/{blob.digest[7:]}", blob.data) for blob in carried]
    proc = cas("import", _tar(tmp_path / "forged.delta", members), check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[:2] == [
        "error: cannot import: 1 blob(s) neither in the archive nor in the store:",
        f"  {dropped.digest} (layer 2/2 of 127.0.0.1:5000/forged:1)",
    ]
    assert json.loads(cas("images", "--json").stdout)["images"] == []


def test_a_text_file_is_not_a_tar_archive_in_plain_words(cas, cas_home, tmp_path):
    """No Python bytes repr of a header field."""
    text = tmp_path / "passwd"
    text.write_text("".join(f"user{i}:x:{i}:{i}:login\nsy:/home/u{i}:/bin/sh\n" for i in range(60)))
    for source in (text, Path("/etc/passwd")):
        line = _assert_refused(cas, cas_home, source, f"cannot import {source}: not a tar archive")
        assert "b'" not in line and 'b"' not in line


def test_an_empty_stdin_says_it_was_empty(cas, cas_home):
    """`: | cas import -` says nothing came, not what an image archive lacks."""
    proc = cas("import", "-", input=b"", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: cannot import standard input: it was empty: nothing came through the pipe",
        "hint: pipe an archive in, e.g. `docker save IMAGE | cas import -`, or name a file",
    ]
