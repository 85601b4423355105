"""The tar writer: what Python's tarfile reads back, over files, pipes and the copy fallback."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from cas.export import tarwriter
from cas.export.tarwriter import TarWriter, TruncatedFile

METHODS = [tarwriter.COPY_FILE_RANGE, tarwriter.SENDFILE, tarwriter.READ_WRITE]


def _write(fd: int, files: dict[str, Path], *, method: str | None = None) -> TarWriter:
    writer = TarWriter(fd)
    if method is not None:
        writer.method = method
    writer.add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    writer.add_dir("blobs")
    for name, path in files.items():
        writer.add_file(name, path, path.stat().st_size)
    writer.close()
    return writer


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for i, size in enumerate((0, 1, 511, 512, 513, 3 * (1 << 20) + 7)):
        path = tmp_path / f"src{i}"
        path.write_bytes(os.urandom(size))
        out[f"blobs/sha256/{i:064x}"] = path
    return out


def _check(data: bytes, files: dict[str, Path]) -> None:
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["oci-layout", "blobs", *files]
        assert members[1].isdir()
        for name, path in files.items():
            assert tar.extractfile(name).read() == path.read_bytes()
            # every file's data starts at a 4 KiB boundary (padded with a PAX comment)
            assert tar.getmember(name).offset_data % tarwriter.DATA_ALIGN == 0, name


@pytest.mark.parametrize("method", METHODS)
def test_regular_file_round_trips(tmp_path: Path, sources: dict[str, Path], method: str) -> None:
    out = tmp_path / "out.tar"
    with open(out, "wb") as fh:
        writer = _write(fh.fileno(), sources, method=method)
    assert writer.method == method
    assert writer.written == out.stat().st_size
    _check(out.read_bytes(), sources)


def test_a_regular_file_output_uses_copy_file_range(tmp_path: Path, sources: dict[str, Path]) -> None:
    with open(tmp_path / "out.tar", "wb") as fh:
        assert _write(fh.fileno(), sources).method == tarwriter.COPY_FILE_RANGE


def test_alignment_counts_from_where_the_output_started(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "out.tar"
    out.write_bytes(b"x" * 1536)  # e.g. `{ cat head; cas export -o -; } > file`
    with open(out, "r+b") as fh:
        fh.seek(1536)
        _write(fh.fileno(), sources)
    data = out.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data[1536:])) as tar:
        for name in sources:
            assert (1536 + tar.getmember(name).offset_data) % tarwriter.DATA_ALIGN == 0
            assert tar.extractfile(name).read() == sources[name].read_bytes()


@pytest.mark.parametrize("at", [0, 512, 1024, 3072, 3584, 4096 * 7 + 2560])
@pytest.mark.parametrize("name", ["blobs/sha256/" + "e" * 64, "blobs/sha512/" + "f" * 128])
def test_padded_header_ends_on_the_boundary_and_reads_back(at: int, name: str) -> None:
    head = tarwriter.header(name, 10, 0, at=at)
    assert (at + len(head)) % tarwriter.DATA_ALIGN == 0
    assert len(head) <= tarwriter.DATA_ALIGN + 3 * 512  # never more than one boundary away
    with tarfile.open(fileobj=io.BytesIO(head + b"0123456789" + bytes(502 + 1024))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.size) == (name, 10)
        assert tar.extractfile(member).read() == b"0123456789"


def test_pipe_round_trips(sources: dict[str, Path]) -> None:
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b"")))
    reader.start()
    try:
        writer = _write(write_end, sources)
    finally:
        os.close(write_end)
        reader.join()
        os.close(read_end)
    assert writer.method == tarwriter.SENDFILE, "sendfile into a pipe should work on Linux"
    _check(b"".join(chunks), sources)


def test_append_mode_output_falls_back_to_copies(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "out.tar"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        writer = _write(fd, sources)
    finally:
        os.close(fd)
    assert writer.method == tarwriter.READ_WRITE
    _check(out.read_bytes(), sources)


def test_a_file_shorter_than_promised_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "short"
    src.write_bytes(b"x" * 100)
    with open(tmp_path / "out.tar", "wb") as fh:
        writer = TarWriter(fh.fileno())
        with pytest.raises(TruncatedFile, match="ended after 100 of 200 bytes"):
            writer.add_file("blobs/sha256/" + "a" * 64, src, 200)


def test_member_names_are_plain_ustar() -> None:
    header = tarwriter.header("blobs/sha256/" + "b" * 64, 1234, 0)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    assert (info.name, info.size, info.mode, info.uid, info.mtime) == ("blobs/sha256/" + "b" * 64, 1234, 0o644, 0, 0)
    assert header[257:263] == b"ustar\0"


def test_huge_member_gets_a_pax_size_record() -> None:
    size = 9 * (1 << 30)
    header = tarwriter.header("blobs/sha256/" + "c" * 64, size, 0)
    assert len(header) == 3 * 512  # pax header, its record block, the ustar header
    pax = tarfile.TarInfo.frombuf(header[:512], "utf-8", "strict")
    assert pax.type == tarfile.XHDTYPE
    record = header[512 : 512 + pax.size]
    assert record == f"{len(record)} size={size}\n".encode()
    # tarfile reads the size from the PAX record: feed it the headers and a sparse body
    body = io.BytesIO(header)
    tar = tarfile.open(fileobj=_Sparse(body, size), mode="r|")
    assert next(iter(tar)).size == size


class _Sparse(io.RawIOBase):
    """The given headers followed by zeros: enough for a streaming reader to parse the first member."""

    def __init__(self, head: io.BytesIO, size: int) -> None:
        self.head = head

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.head.read(len(buf))
        n = len(data)
        buf[:n] = data
        if n < len(buf):
            buf[n:] = bytes(len(buf) - n)
        return len(buf)


SHA512_NAME = "blobs/sha512/" + "d" * 128  # 141 bytes: more than ustar's 100


def test_long_member_name_gets_a_pax_path_record() -> None:
    header = tarwriter.header(SHA512_NAME, 1234, 0)
    assert len(header) == 3 * 512  # pax header, its record block, the ustar header
    pax = tarfile.TarInfo.frombuf(header[:512], "utf-8", "strict")
    assert pax.type == tarfile.XHDTYPE
    record = header[512 : 512 + pax.size]
    assert record == f"{len(record)} path={SHA512_NAME}\n".encode()
    info = tarfile.TarInfo.frombuf(header[1024:], "utf-8", "strict")
    assert (info.name, info.size) == (SHA512_NAME[:100], 1234)  # ustar keeps what fits
    # short names stay plain ustar, as before
    assert len(tarwriter.header("blobs/sha256/" + "b" * 64, 1234, 0)) == 512


def test_long_name_and_huge_size_share_one_pax_header() -> None:
    size = 9 * (1 << 30)
    header = tarwriter.header(SHA512_NAME, size, 0)
    assert len(header) == 3 * 512
    tar = tarfile.open(fileobj=_Sparse(io.BytesIO(header), size), mode="r|")
    first = next(iter(tar))
    assert (first.name, first.size) == (SHA512_NAME, size)


@pytest.mark.parametrize("method", METHODS)
def test_sha512_blob_names_round_trip_through_tarfile_and_gnu_tar(
    tmp_path: Path, sources: dict[str, Path], method: str
) -> None:
    files = {**sources, SHA512_NAME: sources["blobs/sha256/" + "0" * 63 + "5"]}
    out = tmp_path / "out.tar"
    with open(out, "wb") as fh:
        writer = TarWriter(fh.fileno())
        writer.method = method
        writer.add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        writer.add_dir("blobs")
        writer.add_dir("blobs/sha512")  # a directory member between files: check the order below
        for name, path in files.items():
            writer.add_file(name, path, path.stat().st_size)
        writer.add_bytes("index.json", b"{}")
        writer.close()
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["oci-layout", "blobs", "blobs/sha512", *files, "index.json"]
        assert tar.extractfile(SHA512_NAME).read() == files[SHA512_NAME].read_bytes()
        assert tar.extractfile("index.json").read() == b"{}"
    listed = subprocess.run(["tar", "-tf", str(out)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert listed == ["oci-layout", "blobs/", "blobs/sha512/", *files, "index.json"]
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(extracted)], check=True)
    assert (extracted / SHA512_NAME).read_bytes() == files[SHA512_NAME].read_bytes()


def test_a_symlink_source_is_refused_before_its_header(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret" * 100)
    link = tmp_path / "blob"
    link.symlink_to(outside)
    out = tmp_path / "out.tar"
    with open(out, "wb") as fh:
        writer = TarWriter(fh.fileno())
        with pytest.raises(tarwriter.UnsafeSource, match="symlink"):
            writer.add_file("blobs/sha256/" + "a" * 64, link, 600)
        with pytest.raises(tarwriter.UnsafeSource, match="not a regular file"):
            writer.add_file("blobs/sha256/" + "b" * 64, tmp_path, 600)
    assert out.read_bytes() == b""  # not even a header went out
