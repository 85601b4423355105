"""A streaming tar reader for archives nobody vouches for. Knows no images.

It reads one member after another from a stream that cannot seek (``docker save x |
cas import -``), so a member's data must be consumed before the next header; nothing
is buffered beyond one read. Every name is checked before anyone sees it: an absolute
path, a ``..`` component, or a symlink or hard link whose target leaves the archive is
an ``UnsafeArchive``, as are devices and sparse files. A stream that ends inside a
header or a member's data is a ``TruncatedArchive``. Understands ustar, GNU long
names and PAX (``path``, ``linkpath``, ``size``); other PAX records are ignored.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
CHUNK = 1 << 20
_MAX_EXTENDED = 1 << 20  # a PAX header or GNU long name larger than this is not a real archive

FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
_TYPES = {b"0": FILE, b"\0": FILE, b"7": FILE, b"5": DIR, b"2": SYMLINK, b"1": HARDLINK}


class BadTar(Exception):
    """Base of the reader's errors; the caller names the archive when it reports them."""


class TruncatedArchive(BadTar):
    pass


class UnsafeArchive(BadTar):
    pass


@dataclass(frozen=True)
class Member:
    name: str  # normalized: no leading "./", no trailing "/", never absolute, never ".."
    kind: str  # FILE, DIR, SYMLINK or HARDLINK
    size: int
    target: str | None = None  # for links: the member it points to, resolved from the archive's root


class TarStream:
    """``for member in TarStream(fh): ...``; read a FILE member's data with ``chunks()``
    (whatever is not read is skipped before the next header). ``fh.read(n)`` must return
    n bytes unless the stream ends, as a buffered file does."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        # Any bytes available, at most n: a read-ahead source hands out what it holds, without copying.
        self._read_some = getattr(fh, "read_some", fh.read)
        self._left = 0  # unread data of the current member
        self._pad = 0  # padding after it
        self.offset = 0  # bytes consumed so far

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        extended = 0  # bytes of PAX headers and GNU long names before the current member
        while True:
            self._skip_rest()
            header = self._read(BLOCK, "a member header", eof_ok=True)
            if not header or header == bytes(BLOCK):
                return  # end-of-archive blocks (or a stream that stops cleanly between members)
            name, size, typeflag, linkname = _parse_header(header)
            if typeflag in (b"x", b"L", b"K"):
                data = self._extended(size, typeflag)
                extended += len(data)
                if extended > _MAX_EXTENDED:
                    raise UnsafeArchive(f"over {_MAX_EXTENDED} bytes of extended headers for one member")
                if typeflag == b"x":
                    pax.update(_pax_records(data))
                else:
                    pax["path" if typeflag == b"L" else "linkpath"] = data.rstrip(b"\0").decode("utf-8", "replace")
                continue
            if typeflag == b"g":  # global PAX header: nothing we use
                self._begin(size)
                continue
            name = pax.get("path", name)
            linkname = pax.get("linkpath", linkname)
            size = int(pax["size"]) if pax.get("size", "").isdigit() else size
            pax, extended = {}, 0
            kind = _TYPES.get(typeflag)
            if kind is None:
                raise UnsafeArchive(f"member {name!r} is a device, FIFO or sparse file (tar type {typeflag!r})")
            member = checked_member(name, kind, size, linkname)
            self._begin(size if kind == FILE else 0)
            if member is not None:
                yield member

    def chunks(self) -> Iterator[bytes]:
        """The current member's data, in chunks of up to 1 MiB (memoryviews when the source gives them)."""
        while self._left:
            chunk = self._read_some(min(self._left, CHUNK))
            if not chunk:
                raise TruncatedArchive(f"the archive ends in the middle of a member's data (after {self.offset} bytes)")
            self._left -= len(chunk)
            self.offset += len(chunk)
            yield chunk

    # plumbing ----------------------------------------------------------------
    def _begin(self, size: int) -> None:
        self._left, self._pad = size, -size % BLOCK

    def _skip_rest(self) -> None:
        for _ in self.chunks():
            pass
        if self._pad:
            self._read(self._pad, "a member's padding")
            self._pad = 0

    def _extended(self, size: int, typeflag: bytes) -> bytes:
        if size > _MAX_EXTENDED:
            raise UnsafeArchive(f"an extended tar header ({typeflag.decode()}) of {size} bytes")
        self._begin(size)
        return b"".join(self.chunks())

    def _read(self, n: int, what: str, *, eof_ok: bool = False) -> bytes:
        data = self._fh.read(n)
        if len(data) != n and not (eof_ok and not data):
            raise TruncatedArchive(f"the archive ends in the middle of {what} (after {self.offset + len(data)} bytes)")
        self.offset += len(data)
        return data


def _parse_header(header: bytes) -> tuple[str, int, bytes, str]:
    try:
        stored = _number(header[148:156], "checksum")
    except BadTar:  # a text file, a gzip: anything but a tar header
        raise BadTar("not a tar archive (bad header checksum)") from None
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 2 * sum(b for b in header[:148] + header[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise BadTar("not a tar archive (bad header checksum)")
    name = _text(header[0:100])
    if header[257:263] == b"ustar\0" and header[345]:  # POSIX ustar: a prefix for long names
        name = _text(header[345:500]) + "/" + name
    return name, _number(header[124:136], "size"), header[156:157], _text(header[157:257])


def _number(field: bytes, what: str) -> int:
    if field[0] & 0x80:  # GNU base-256
        value = field[0] & 0x3F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BadTar(f"not a tar archive (its {what} field is not an octal number)") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pax_records(data: bytes) -> dict[str, str]:
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BadTar("not a tar archive (malformed PAX header)") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise BadTar("not a tar archive (malformed PAX header)")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records


def safe_name(name: str) -> str:
    """A member name as a relative path inside the archive; UnsafeArchive for anything else."""
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise UnsafeArchive(f"member name {name!r} is absolute or not a plain path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member name {name!r} contains '..'")
    return "/".join(parts)


def checked_member(name: str, kind: str, size: int, linkname: str = "") -> Member | None:
    """The member, its name and link target checked; None for the archive's root itself."""
    clean = safe_name(name)
    if not clean:
        return None  # "./" itself
    if kind == SYMLINK:
        if linkname.startswith("/"):
            raise UnsafeArchive(f"symlink {name!r} points to an absolute path {linkname!r}")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(clean), linkname))
        if target == ".." or target.startswith("../") or not linkname:
            raise UnsafeArchive(f"symlink {name!r} points outside the archive ({linkname!r})")
        return Member(clean, kind, 0, target)
    if kind == HARDLINK:
        try:
            target = safe_name(linkname)
        except UnsafeArchive:
            raise UnsafeArchive(f"hard link {name!r} points outside the archive ({linkname!r})") from None
        return Member(clean, kind, 0, target)
    return Member(clean, kind, size)
