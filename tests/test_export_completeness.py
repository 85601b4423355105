"""Export is complete or writes nothing, for every position a blob can be missing from, on
images pulled from the real registry (not hand-built stores)."""

from __future__ import annotations

import os

import pytest

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
POSITIONS = ("manifest", "config", "layer 1/5", "layer 3/5", "layer 5/5")


def _digest_at(image, position: str) -> str:
    if position == "manifest":
        return image.digest
    if position == "config":
        return image.config_blob.digest
    return image.layers[int(position.split()[1].split("/")[0]) - 1].digest


@pytest.mark.parametrize("position", POSITIONS)
def test_a_blob_missing_at_any_position_is_named_and_nothing_is_written(
    position, cas, cas_home, registry, test_images, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    digest = _digest_at(test_images.app, position)
    (cas_home / "v1" / "blobs" / "sha256" / digest[7:]).unlink()
    out = tmp_path / "out"
    out.mkdir()
    for fmt in FORMATS:
        failed = cas("export", "--format", fmt, app, "-o", out / "app", check=False)
        assert failed.returncode == 1, (fmt, failed.stderr)
        assert failed.stderr.splitlines() == [
            "error: cannot export: 1 blob(s) missing from the store:",
            f"  {digest} ({position} of {app})",
            f"hint: run `cas pull {app}` or export with --pull; nothing was written",
        ], fmt
        assert os.listdir(out) == [], fmt  # no archive, no partial file, no directory
    streamed = cas("export", app, "-o", "-", check=False, text=False)
    assert streamed.returncode == 1 and streamed.stdout == b""
