import hashlib

import blake3
import pytest

from cas.digest import Digest, StreamVerifier, of_bytes
from cas.errors import BadDigest, DigestMismatch


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "g" * 64,
        "sha256:../../../../etc/passwd" + "0" * 40,
        "sha256:" + "0" * 62 + "/x",
        "md5:" + "0" * 32,
        "sha256",
        "",
        None,
        "sha512:" + "0" * 64,
    ],
)
def test_parse_rejects_anything_unsafe_as_a_path(text):
    with pytest.raises(BadDigest):
        Digest.parse(text)


def test_parse_accepts_registered_algorithms():
    for alg, n in (("sha256", 64), ("sha512", 128), ("blake3", 64)):
        d = Digest.parse(f"{alg}:{'ab' * (n // 2)}")
        assert str(d) == f"{alg}:{'ab' * (n // 2)}"


def test_stream_verifier_checks_digest_and_fingerprints():
    data = b"hello world" * 1000
    expected = of_bytes(data)
    v = StreamVerifier(expected)
    for i in range(0, len(data), 777):
        v.update(data[i : i + 777])
    v.check()
    assert v.size == len(data)
    assert v.fingerprint == blake3.blake3(data).hexdigest()

    bad = StreamVerifier(Digest("sha256", hashlib.sha256(b"other").hexdigest()))
    bad.update(data)
    with pytest.raises(DigestMismatch) as info:
        bad.check()
    assert str(expected) in info.value.message


def test_blake3_digest_uses_one_hasher():
    data = b"x" * 100
    d = of_bytes(data, "blake3")
    v = StreamVerifier(d)
    v.update(data)
    v.check()
    assert v.fingerprint == d.hex
