"""Image-set files (`-f FILE`) and lock files: which images a build machine or an air-gap site needs.

One image a line, ``REF [PLATFORM[,PLATFORM...]]``, with ``#`` comments and blank lines::

    # what the builds use
    127.0.0.1:5000/base:1.4
    ghcr.io/org/tool:2   linux/amd64,linux/arm64

A lock file is the same format with every line pinned: ``NAME:TAG@DIGEST PLATFORMS``, the digest the
tag resolved to and the platforms taken (``cas pull -f FILE --lock LOCK`` writes it). Pulling a
pinned line fetches exactly that digest, whatever the tag names today. A mistake in a line is a
usage error naming ``FILE:LINE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cas.digest import Digest
from cas.errors import CasError, OutputError, UsageError
from cas.manifest import Platform
from cas.reference import Reference, parse

if TYPE_CHECKING:
    from cas.store import Store

STDIN = "-"


@dataclass(frozen=True)
class Entry:
    """One image of a set: what to fetch, for which platforms, and where it was written down."""

    ref: Reference  # as written: NAME:TAG, NAME@DIGEST, or NAME:TAG@DIGEST (pinned)
    platforms: tuple[Platform, ...] = ()  # none: the command's own --platform (or this host)
    where: str = ""  # FILE:LINE, or "" for a command-line argument

    @property
    def pinned(self) -> Digest | None:
        """The digest a lock line pins its tag to."""
        return self.ref.digest if self.ref.tag is not None else None

    @property
    def name(self) -> Reference:
        """What the store calls it: NAME:TAG for a pinned line (the pin is checked), else the reference."""
        return Reference(self.ref.registry, self.ref.repository, self.ref.tag) if self.pinned else self.ref

    @property
    def fetch(self) -> Reference:
        """What a pull asks for: NAME@DIGEST for a pinned line, else the reference."""
        if self.pinned:
            return Reference(self.ref.registry, self.ref.repository, None, self.pinned)
        return self.ref


def entries(arguments: Iterable[str] | None, path: str | None) -> list[Entry]:
    """The references given as arguments, then those of ``-f FILE``; at least one."""
    found = [Entry(parse(text)) for text in arguments or ()]
    if path is not None:
        found += read(path)
    if not found:
        raise UsageError("missing argument REF...", hint="name images as arguments, or in a file with -f FILE")
    return found


def read(path: str) -> list[Entry]:
    """The entries of ``path`` (``-``: standard input); UsageError naming FILE:LINE for a bad line."""
    shown = "stdin" if path == STDIN else path
    try:
        text = sys.stdin.read() if path == STDIN else Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"-f {path}: no such file", hint="give a file with one image reference a line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-f {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    entries = [entry for n, line in enumerate(text.splitlines(), 1) if (entry := _line(line, f"{shown}:{n}"))]
    if not entries:
        raise UsageError(f"{shown} names no image", hint="one reference a line; `#` starts a comment")
    return entries


def _line(line: str, where: str) -> Entry | None:
    words = line.split("#", 1)[0].split()  # no reference holds a '#'
    if not words:
        return None
    if len(words) > 2:
        raise UsageError(f"{where}: {len(words)} words: expected REF [PLATFORM,...]", hint=_HINT)
    try:
        ref = parse(words[0])
        platforms = tuple(Platform.parse(p) for p in words[1].split(",")) if len(words) > 1 else ()
    except CasError as exc:
        raise UsageError(f"{where}: {exc.message}", hint=exc.hint or _HINT) from None
    return Entry(ref, platforms, where)


_HINT = "each line is REF [OS/ARCH[/VARIANT],...]; `#` starts a comment"


def lock_line(entry: Entry, digest: Digest, platforms: Iterable[str | None]) -> str:
    """One pinned line: NAME:TAG@DIGEST and the platforms taken."""
    ref = entry.name
    if ref.tag is None:  # pulled by digest: pinned already
        text = f"{ref.name}@{digest}"
    else:
        text = f"{ref.name}:{ref.tag}@{digest}"
    listed = ",".join(p for p in platforms if p)
    return f"{text} {listed}".rstrip()


def write_lock(path: str, lines: list[str], source: str) -> None:
    """Write the lock file whole or not at all (a temp file beside it, renamed)."""
    body = f"# cas lock file: each image pinned to the digest it resolved to (from {source})\n"
    body += "".join(f"{line}\n" for line in lines)
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(body)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the lock file {path}: {exc.strerror}") from None


def check_pins(store: Store, entries: list[Entry], source: str | None) -> None:
    """An export from a lock file writes exactly the pinned images: NAME:TAG in the store must be its pin."""
    from cas.errors import NotCached

    for entry in entries:
        if entry.pinned is None:
            continue
        cached = {r.digest for r in store.metadata.ref_records(str(entry.name))}
        if entry.pinned not in cached:
            now = f"the store's is {', '.join(map(str, cached))}" if cached else "it is not cached"
            raise NotCached(
                f"{entry.where + ': ' if entry.where else ''}{entry.name} is locked to {entry.pinned}; {now}",
                hint=f"run `cas pull -f {source}` first (it fetches exactly the locked digests)"
                if source
                else f"run `cas pull {entry.ref}` first (it fetches exactly that digest)",
            )


def destination(entry: Entry, prefix: str) -> Reference:
    """Where `push -f FILE PREFIX` and `copy -f FILE PREFIX` send an entry: PREFIX/REPOSITORY:TAG
    (or @DIGEST), the repository path kept whole as `skopeo sync` keeps it."""
    text = f"{prefix.rstrip('/')}/{entry.name.repository}"
    name = entry.name
    return parse(f"{text}:{name.tag}" if name.tag is not None else f"{text}@{name.digest}")


def prefix_of(text: str) -> str:
    """A destination prefix: HOST[:PORT][/PATH], no tag or digest (each image keeps its own)."""
    last = text.rstrip("/").rsplit("/", 1)[-1]
    if "@" in text or ("/" in text.rstrip("/") and ":" in last):
        raise UsageError(f"{text}: with -f, DEST is a prefix (HOST[/PATH]), each image keeps its own tag")
    if "/" not in text.rstrip("/") and not ("." in text or ":" in text or text.startswith("localhost")):
        raise UsageError(f"{text}: with -f, DEST is a registry prefix such as host:5000/mirror")
    return text.rstrip("/")
