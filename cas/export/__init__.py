"""cas export: docker-archive, oci-archive and oci-dir, complete or not at all.

    export(store, [parse("app:1.0")], Path("app.tar"))            # docker-archive
    export(store, refs, 1, ExportOptions(format="oci-archive"))   # stream to fd 1
    export(store, [new], Path("d.tar"), ExportOptions(format="delta", since=[old]))  # see cas.export.delta

The completeness check (``plan``, then ``confirm``: the fingerprints of what will be
written) runs under the shared store lock before the first byte is written, and that
one lock is held to the end, across a ``--pull``; the exported digests are leased
while they are written, and the "used" time of every exported ref record is updated
(each name of an image, not only the first). The network is touched only with
``pull=True``, through ``cas.pull`` (imported only then), and only when that one
check finds references missing, incomplete, not cached for the platform, or with
blobs changed after commit: exactly those are pulled (one pull per reference; a pull
downloads a changed blob again), and the check runs once more, and only once.
Blob files are never read through a symlink.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cas import DEFAULT_LOCK_TIMEOUT, stats
from cas.digest import Digest
from cas.errors import CasError, ChangedBlobs, DiskFull, OutputError, StoreError, UsageError
from cas.export import delta, docker_archive, oci
from cas.export.output import NOTHING_KEPT, archive_output, check_stream, dir_output, is_stream, partial_stream
from cas.export.plan import ExportPlan, ImagePlan, Missing, confirm, plan
from cas.export.tarwriter import TarWriter, TruncatedFile, UnsafeSource
from cas.manifest import Descriptor, Platform
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import Store
from cas.store.fs import Linker

if TYPE_CHECKING:
    from cas.pull import PullOptions  # only --pull needs the pull path (and its HTTP client) at run time

FORMATS = ("docker-archive", "oci-archive", "oci-dir", "delta")
log = logging.getLogger("cas.export")

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportPlan",
    "ExportResult",
    "ExportedImage",
    "ExportedIndex",
    "ImagePlan",
    "OutputError",
    "UsageError",
    "export",
    "plan",
]


@dataclass
class ExportOptions:
    format: str = "docker-archive"
    tag: str | None = None  # NAME:TAG for the one exported image
    platform: Platform | None = None  # the platform the record must hold (or --pull fetches)
    pull: bool = False  # pull refs that are not cached or not complete first
    pull_options: PullOptions | None = None  # for those pulls
    warn: Callable[[str], None] | None = None  # e.g. the one "copying instead of linking" warning
    on_wait: Callable[[str], None] | None = None  # waiting for the store lock
    on_plan: Callable[[ExportPlan], None] | None = None  # the checked plan, before the first byte
    on_blob: Callable[[Descriptor], None] | None = None  # after each blob is written
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
    since: list[Reference] = field(default_factory=list)  # delta: images the receiver holds
    since_inventory: Path | None = None  # delta: the receiver's `cas images --json`
    verify: bool = False  # re-hash every blob while it is written (one pass), fail on a mismatch


@dataclass(frozen=True)
class ExportedImage:
    """One image written: its reference, the names it carries in the archive, its manifest."""

    ref: str
    names: list[str]
    manifest: str
    platform: str | None
    size: int


@dataclass(frozen=True)
class ExportedIndex:
    """An index the archive holds for a reference with several platforms (OCI formats)."""

    names: list[str]
    digest: str
    platforms: list[str | None]
    manifests: list[str]


@dataclass(frozen=True)
class DeltaCounts:
    """What a delta carries and what it needs the receiver to hold."""

    carried_blobs: int
    carried_bytes: int
    required_blobs: int
    required_bytes: int
    bases: list[str]


@dataclass
class ExportResult:
    output: str
    format: str
    images: list[ExportedImage] = field(default_factory=list)
    indexes: list[ExportedIndex] = field(default_factory=list)  # OCI formats: a reference with several platforms
    blobs: int = 0  # every blob written, each once: manifests, configs, layers, and indexes made for the archive
    bytes: int = 0  # blob bytes exported
    written: int = 0  # archive bytes written (tar formats)
    linked: bool = True  # oci-dir: hard links (False: fell back to copies)
    copy_method: str = "copy_file_range"  # tar formats: copy_file_range (clones where it can), sendfile, read-write
    pulled: list[str] = field(default_factory=list)
    delta: DeltaCounts | None = None  # a delta's carried and required blobs
    verified: bool = False  # --verify: every blob was re-hashed while it was written
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The `cas export --json` fields: these names, renamed to the conventions of cas.jsonout."""
        body = {_JSON_NAMES.get(key, key): value for key, value in asdict(self).items()}
        body["seconds"] = round(self.seconds, 3)
        return body


_JSON_NAMES = {
    "blobs": "exported_blobs",
    "bytes": "exported_bytes",
    "written": "written_bytes",
    "pulled": "pulled_refs",
}


def export(
    store: Store, references: Sequence[Reference], output: Path | int, options: ExportOptions | None = None
) -> ExportResult:
    """Write ``references`` to ``output`` (a path, or an open fd such as 1 for stdout)."""
    options = options or ExportOptions()
    started = time.monotonic()
    if options.format not in FORMATS:
        raise UsageError(f"unknown export format {options.format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    if isinstance(output, int):
        if options.format == "oci-dir":
            raise UsageError(
                "oci-dir writes a directory, not a stream", hint="give -o DIR, or use --format oci-archive"
            )
        check_stream(output)  # before any lock, plan or pull; archive_output relies on it
    if (options.format == "delta") != bool(options.since or options.since_inventory):
        raise UsageError(
            "a delta archive is written against --since BASE or --since-inventory FILE, in its own format",
            hint="cas export NEW --since BASE -o delta.tar (no --format)",
        )
    tag = parse_reference(options.tag) if options.tag is not None else None

    result = ExportResult(output="-" if isinstance(output, int) else str(output), format=options.format)
    # One shared lock from the check to the last byte, across a --pull too (the pull's own shared
    # lock stacks on it): a prune waiting for the pull must not evict what it pulled before we write it.
    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.on_wait):
        checked, write = _prepare(store, references, tag, options, result)
        if checked.missing and options.pull:  # pull exactly what the check found missing, then check again
            result.pulled = _pull_missing(store, checked.missing, options)
            checked, write = _prepare(store, references, tag, options, result)
        checked.check(pulled=bool(result.pulled))
        assert write is not None  # nothing is missing
        _write(store, checked, write, output, options, result)

    blobs = checked.blobs
    result.images = [
        ExportedImage(
            ref=image.ref,
            names=[name.familiar for name in image.names],
            manifest=str(image.manifest.digest),
            platform=image.platform,
            size=sum(b.size for b in image.blobs),
        )
        for image in checked.images
    ]
    result.indexes = [
        ExportedIndex(
            names=[name.familiar for name in index.names],
            digest=str(index.descriptor.digest),
            platforms=[image.platform for image in index.images],
            manifests=[str(image.manifest.digest) for image in index.images],
        )
        for index in checked.indexes
    ]
    made = [index.descriptor for index in checked.indexes]  # written as blobs too (OCI formats)
    result.blobs = len(blobs) + len(made)
    result.bytes = sum(b.size for b in (*blobs, *made))
    stats.count(store.metadata, exports=1, exported_bytes=result.bytes)
    result.seconds = time.monotonic() - started
    return result


def _prepare(
    store: Store, references: Sequence[Reference], tag: Reference | None, options: ExportOptions, result: ExportResult
) -> tuple[ExportPlan, Callable | None]:
    """The plan with everything it lacks, changed blobs included, and its writer (None while
    something is missing). The fingerprints are checked for what the output holds (a delta: what
    it carries), or, when a --pull follows anyway, for every planned blob: one pull fetches both."""
    every_platform = options.format in ("oci-archive", "oci-dir")
    checked = plan(store, references, tag=tag, platform=options.platform, every_platform=every_platform)
    write, written = None, None  # written: every blob of the plan, except for a delta: what it carries
    with _store_damage(checked):
        if not checked.missing:
            if options.format == "delta":
                write, written = _delta_writer(store, checked, options, result)
            else:
                write = docker_archive.write_archive if options.format == "docker-archive" else oci.write_archive
        if not checked.missing or options.pull:
            confirm(store, checked, written)
    return checked, write


def _write(
    store: Store, checked: ExportPlan, write: Callable, output: Path | int, options: ExportOptions, result: ExportResult
) -> None:
    """Write the checked plan (under the caller's shared store lock) and mark its refs used."""
    writer: TarWriter | None = None
    try:
        with contextlib.ExitStack() as held, _store_damage(checked):
            if options.on_plan is not None:
                options.on_plan(checked)
            recorded = _lease(store, checked, held)
            if options.format == "oci-dir":
                assert not isinstance(output, int)
                linker = Linker(options.warn or (lambda message: None))
                with dir_output(Path(output)) as tmp:
                    oci.write_dir(tmp, store, checked, linker, options.on_blob, verify=options.verify)
                result.linked = not linker.copying
            else:
                with archive_output(output) as fd:
                    writer = TarWriter(fd, verify=options.verify)
                    write(writer, store, checked, options.on_blob)
                result.written = writer.written
                result.copy_method = writer.method
            if recorded:
                with contextlib.suppress(DiskFull):  # the archive is complete; only the LRU time is lost
                    store.metadata.touch_refs(checked.records)
    except CasError as exc:
        if writer is not None and is_stream(output):
            partial_stream(exc, writer.written)
        raise
    result.verified = options.verify


def _lease(store: Store, checked: ExportPlan, held: contextlib.ExitStack) -> bool:
    """Lease the exported digests; False on a full disk, where the export goes on without a lease
    (and without updating "used" times): the shared store lock it holds already keeps prune out."""
    if store.metadata.read_only:
        return False
    try:
        held.enter_context(store.metadata.lease(b.digest for b in checked.blobs))
    except DiskFull:
        log.info("the disk under the index is full: exporting without a lease")
        return False
    return True


def _delta_writer(
    store: Store, checked: ExportPlan, options: ExportOptions, result: ExportResult
) -> tuple[Callable, set[Digest]]:
    """Work out the delta before the output is opened; the writer then only streams it.
    Returns the writer and the digests it carries."""
    bases = delta.bases_of(store, options.since)
    if options.since_inventory is not None:
        bases += delta.inventory_bases(store, options.since_inventory, options.warn or (lambda message: None))
    description, carried = delta.describe(store, checked, bases)
    result.delta = DeltaCounts(
        carried_blobs=len(carried),
        carried_bytes=sum(b.size for b in carried),
        required_blobs=len(description.requires),
        required_bytes=sum(r.size for r in description.requires),
        bases=[base.name for base in bases],
    )

    def write(writer: TarWriter, store: Store, plan: ExportPlan, on_blob: Callable | None) -> None:
        delta.write_delta(writer, store, description, carried, on_blob)

    return write, {b.digest for b in carried}


@contextlib.contextmanager
def _store_damage(checked: ExportPlan) -> Iterator[None]:
    try:
        yield
    except TruncatedFile as exc:
        raise StoreError(
            f"a blob in the store changed while it was exported ({exc})",
            hint=f"run `cas verify`, then pull the image again; {NOTHING_KEPT}",
        ) from exc
    except UnsafeSource as exc:
        raise StoreError(
            f"refusing to export from the store: {exc}",
            hint=f"run `cas verify --repair` (it removes what is not a blob), then pull the image again; {NOTHING_KEPT}",
        ) from exc
    except oci.ChangedWhileExported as exc:
        refs = [image.ref for image in checked.images if any(b.digest == exc.digest for b in image.blobs)]
        raise ChangedBlobs([f"{exc.digest}: {exc.problem} (found by --verify)"], refs, NOTHING_KEPT) from exc


def _pull_missing(store: Store, missing: list[Missing], options: ExportOptions) -> list[str]:
    """Pull each reference the check found missing, for the platforms it lacks (one pull per reference)."""
    from cas.pull import PullOptions, pull  # httpx and the registry client: only on --pull

    base = options.pull_options or PullOptions()
    wanted: dict[str, tuple[Reference, tuple[Platform, ...]]] = {}
    for m in missing:
        reference, platforms = wanted.get(str(m.reference), (m.reference, ()))
        wanted[str(m.reference)] = reference, tuple(dict.fromkeys(platforms + m.platforms))
    return [
        pull(store, reference, replace(base, platforms=platforms, all_platforms=False)).ref
        for reference, platforms in wanted.values()
    ]
