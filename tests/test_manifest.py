import json

import pytest

from cas import manifest as mf
from cas.errors import ManifestError, PlatformNotFound, UnsupportedManifest

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def _image(media_type=mf.OCI_MANIFEST, with_type=True):
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": mf.OCI_CONFIG, "digest": "sha256:" + H1, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + H2, "size": 20}],
    }
    if with_type:
        doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def _index():
    entries = [
        {
            "mediaType": mf.OCI_MANIFEST,
            "digest": "sha256:" + H1,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": mf.OCI_MANIFEST,
            "digest": "sha256:" + H2,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "mediaType": mf.OCI_MANIFEST,
            "digest": "sha256:" + H3,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        },
        {
            "mediaType": mf.OCI_MANIFEST,
            "digest": "sha256:" + H3,
            "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
        },
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}).encode()


def test_media_type_from_field_then_content_type_then_shape():
    assert mf.media_type_of(_image(mf.DOCKER_MANIFEST), "application/json") == mf.DOCKER_MANIFEST
    assert mf.media_type_of(_image(with_type=False), mf.OCI_MANIFEST) == mf.OCI_MANIFEST
    assert mf.media_type_of(_image(with_type=False), None) == mf.OCI_MANIFEST


def test_parse_image_and_index():
    image = mf.parse(_image(), mf.OCI_MANIFEST)
    assert isinstance(image, mf.ImageManifest)
    assert [str(d.digest) for d in image.blobs] == ["sha256:" + H1, "sha256:" + H2]
    index = mf.parse(_index(), mf.OCI_INDEX)
    assert isinstance(index, mf.ImageIndex)
    assert index.platforms() == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]


@pytest.mark.parametrize(
    "wanted, expected",
    [
        ("linux/amd64", H1),
        ("linux/arm64", H2),
        ("linux/aarch64", H2),
        ("linux/arm64/v8", H2),
        ("linux/arm", H3),
        ("linux/arm/v7", H3),
    ],
)
def test_platform_selection(wanted, expected):
    index = mf.parse(_index(), mf.OCI_INDEX)
    assert index.select(mf.Platform.parse(wanted)).digest.hex == expected


def test_platform_not_found_lists_what_exists():
    index = mf.parse(_index(), mf.OCI_INDEX)
    with pytest.raises(PlatformNotFound) as info:
        index.select(mf.Platform.parse("windows/amd64"))
    assert "linux/amd64, linux/arm64/v8, linux/arm/v7" in info.value.message
    assert "unknown" not in info.value.message


def test_schema1_is_unsupported_with_a_hint():
    with pytest.raises(UnsupportedManifest) as info:
        mf.parse(b'{"schemaVersion": 1}', mf.DOCKER_SCHEMA1[1])
    assert info.value.hint


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (
            json.dumps({"config": {"digest": "sha256:" + H1, "size": 1}, "layers": {}}).encode(),
            "'layers' is not a list",
        ),
        (json.dumps({"config": {"digest": "sha256:../x", "size": 1}, "layers": []}).encode(), "config"),
        (json.dumps({"config": {"digest": "sha256:" + H1, "size": -1}, "layers": []}).encode(), "valid size"),
    ],
)
def test_broken_manifests_are_errors(data, fragment):
    with pytest.raises(ManifestError) as info:
        mf.parse(data, mf.OCI_MANIFEST)
    assert fragment in info.value.message


def test_unknown_media_type_is_an_error():
    with pytest.raises(UnsupportedManifest):
        mf.parse(_image(), "application/vnd.example+json")


def test_platform_parse_rejects_garbage():
    with pytest.raises(ManifestError):
        mf.Platform.parse("linux")


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"os": "linux", "architecture": "arm64"}, "linux/arm64/v8"),  # the same as an index entry says
        ({"os": "linux", "architecture": "amd64", "variant": 7}, "linux/amd64"),  # junk variant ignored
        ({"os": "linux", "architecture": ["amd64"]}, None),
        ({"os": "", "architecture": "amd64"}, None),
        ("linux/amd64", None),
    ],
)
def test_platform_from_json_is_normalized_and_never_trusts_types(obj, expected):
    platform = mf.Platform.from_json(obj)
    assert (str(platform) if platform else None) == expected


def test_index_entry_with_a_junk_variant_still_selects_and_lists():
    doc = json.loads(_index())
    doc["manifests"][0]["platform"]["variant"] = 7
    index = mf.parse(json.dumps(doc).encode(), mf.OCI_INDEX)
    with pytest.raises(PlatformNotFound) as info:
        index.select(mf.Platform.parse("windows/amd64"))
    assert "linux/amd64" in info.value.message
