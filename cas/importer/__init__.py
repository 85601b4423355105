"""cas import: archives into the store, verified, through the same commit path as a pull.

    import_archive(store, Path("app.tar"))                     # docker-archive, oci-archive, delta
    import_archive(store, sys.stdin.buffer)                    # docker save x | cas import -
    import_archive(store, Path("layout/"), ImportOptions(tag="app:1"))

The same shape as ``cas.pull``: plan what is missing, move blobs, record.
  1. move: members stream into the store as they arrive (``receive``); each blob is
     committed only once its bytes hash to its digest (on a commit thread, while the
     next member streams in); nothing is staged whole.
     A delta's description comes first and is checked against this store before
     any blob is read (``MissingRequirements``).
  2. plan: once the archive has ended, ``layouts`` says which images it holds and
     which of their blobs are neither in the archive nor in the store: any such
     blob fails the import (``IncompleteArchive``, every digest named) and no ref
     is recorded.
  3. record: ``cas.record_image.record_image``, as for a pull.
The store lock is held shared throughout and every digest is leased as it arrives,
so a prune can neither run in between nor take what was just committed. A failed
import leaves no ingest entry; blobs it verified and committed stay in the store
unreferenced until the next ``cas prune``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cas import DEFAULT_LOCK_TIMEOUT
from cas.delta_format import DeltaDescription
from cas.digest import Digest
from cas.errors import ArchiveError, IncompleteArchive, MissingRequirements, UsageError
from cas.importer.layouts import ImageSource, find_images
from cas.importer.receive import Receiver
from cas.importer.sources import read_dir, read_tar
from cas.importer.tarstream import BadTar
from cas.record_image import clear_marks, commit_bytes, record_image
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import Store

if TYPE_CHECKING:
    from cas.metadata import Lease

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
STDIN = "standard input"  # the label of `cas import -`
UNNAMED = "localhost/imported"  # the name an unnamed image is recorded under, with its digest


@dataclass
class ImportOptions:
    format: str | None = None  # None: detected
    tag: str | None = None  # NAME:TAG for the one image of the archive
    on_bytes: Callable[[int], None] | None = None  # archive bytes read into the store
    on_wait: Callable[[str], None] | None = None
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT


@dataclass(frozen=True)
class ImportedImage:
    """One image recorded: every reference it was recorded as, and the names the archive gave it."""

    refs: list[str]
    names: list[str]
    manifest: str
    media_type: str
    platform: str | None
    size: int
    built_manifest: bool  # a legacy `docker save` layout: cas built the manifest, its digest is cas's


@dataclass
class ImportResult:
    source: str
    format: str = ""
    images: list[ImportedImage] = field(default_factory=list)
    stored_blobs: int = 0
    stored_bytes: int = 0
    reused_blobs: int = 0
    reused_bytes: int = 0
    read_bytes: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def import_archive(store: Store, source: Path | BinaryIO, options: ImportOptions | None = None) -> ImportResult:
    options = options or ImportOptions()
    started = time.monotonic()
    if options.format is not None and options.format not in FORMATS:
        raise UsageError(f"unknown format {options.format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    tag = _tag(options.tag)
    label = str(source) if isinstance(source, Path) else STDIN
    is_dir = isinstance(source, Path) and source.is_dir()
    if options.format is not None and (options.format == "oci-dir") != is_dir:
        what = "a directory" if is_dir else "not a directory"
        raise UsageError(
            f"{label} is {what}", hint="--format oci-dir reads an OCI layout directory; the others read a tar"
        )
    result = ImportResult(label)
    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.on_wait):
        with store.metadata.lease() as lease:
            receiver = Receiver(
                store, lease, on_delta=lambda d: _check_requirements(store, d), on_bytes=options.on_bytes
            )
            with _errors_of(label):
                result.read_bytes = _receive(source, is_dir, receiver, label)
                if result.read_bytes == 0 and not receiver.received.files:
                    raise _empty(label)
                received = receiver.received
                layout, images, missing = find_images(received, store, options.format)
            if missing:
                raise IncompleteArchive(missing)
            if tag is not None:
                tops = {image.top or (image.manifest.digest, "") for image in images}
                if len(tops) != 1:  # the platforms of one index are one image to name
                    raise UsageError(
                        f"--tag names one image, but {label} holds {len(tops)}", hint="import without --tag"
                    )
                for image in images:
                    image.names = [tag]
            result.format = "oci-dir" if is_dir else layout
            stored = {digest: info.size for digest, info in received.stored.items()}
            for image in images:
                result.images.append(_record(store, lease, image, stored))
            clear_marks(store, set(stored))  # blobs it brought back heal other images too
    result.stored_blobs, result.stored_bytes = len(stored), sum(stored.values())
    result.reused_blobs, result.reused_bytes = len(received.reused), sum(received.reused.values())
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _errors_of(label: str) -> Iterator[None]:
    """The one place an import's errors are mapped: the tar reader's, and every ArchiveError, name
    the archive. Those that list missing blobs speak of the store, and say so themselves."""
    try:
        yield
    except BadTar as exc:
        raise ArchiveError(f"cannot import {label}: {exc}") from None
    except (MissingRequirements, IncompleteArchive):
        raise
    except ArchiveError as exc:
        raise ArchiveError(f"cannot import {label}: {exc.message}", hint=exc.hint) from None


def _empty(label: str) -> ArchiveError:
    """Nothing came: said as such, not as a tar or layout that lacks something (mapped by ``_errors_of``)."""
    if label == STDIN:
        return ArchiveError(
            "it was empty: nothing came through the pipe",
            hint="pipe an archive in, e.g. `docker save IMAGE | cas import -`, or name a file",
        )
    return ArchiveError("it is empty", hint="name a docker-archive, an oci-archive or an OCI layout directory")


def _receive(source: Path | BinaryIO, is_dir: bool, receiver: Receiver, label: str) -> int:
    """Every member into the store, every commit finished; the bytes read."""
    try:
        read = _read_members(source, is_dir, receiver, label)
    except BaseException:
        receiver.abandon()
        raise
    receiver.finish()
    return read


def _read_members(source: Path | BinaryIO, is_dir: bool, receiver: Receiver, label: str) -> int:
    if is_dir:
        assert isinstance(source, Path)
        return read_dir(source, receiver.take)
    if not isinstance(source, Path):
        return read_tar(source, receiver.take)
    try:
        fh = open(source, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror}", hint="check the path") from None
    with fh:
        return read_tar(fh, receiver.take)


def _check_requirements(store: Store, delta: DeltaDescription) -> None:
    """Before any blob of a delta is read: every blob it requires must be here, with the right size."""
    missing = [
        f"{req.digest} ({req.size} bytes, from {req.base})"
        for req in delta.requires
        if not store.blobs.has(req.digest, req.size)
    ]
    if missing:
        bases = list(dict.fromkeys(req.base for req in delta.requires if not store.blobs.has(req.digest, req.size)))
        raise MissingRequirements(missing, bases)


def _record(store: Store, lease: Lease, source: ImageSource, stored: dict[Digest, int]) -> ImportedImage:
    """Commit what the image still holds in memory (into ``stored`` when new), record each name
    (which types its blobs)."""
    image = source.image
    held = [(image.config, source.config), (source.manifest, source.built)]  # a legacy image's, cas-made
    for desc, data in held:
        if data is not None and commit_bytes(store, lease, desc.digest, data, desc.media_type):
            stored[desc.digest] = len(data)
    names = source.names or [parse_reference(f"{UNNAMED}@{source.manifest.digest}")]
    refs = []
    for name in names:
        record = record_image(
            store,
            lease,
            ref=str(name),
            registry=name.registry,
            chain=[*([source.top] if source.top else []), (source.manifest.digest, source.manifest.media_type)],
            image=image,
            platform=source.platform,
        )
        refs.append(record.ref)
    return ImportedImage(
        refs=refs,
        names=[name.familiar for name in source.names],
        manifest=str(source.manifest.digest),
        media_type=source.manifest.media_type,
        platform=record.platform,
        size=record.size,
        built_manifest=source.built is not None,
    )


def _tag(text: str | None) -> Reference | None:
    if text is None:
        return None
    tag = parse_reference(text)
    if tag.tag is None or tag.digest is not None:
        raise UsageError(f"--tag {text} is not a NAME:TAG", hint="e.g. --tag myapp:1.0")
    return tag


__all__ = ["FORMATS", "ImportOptions", "ImportResult", "import_archive"]
