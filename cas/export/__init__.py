"""cas export: docker-archive, oci-archive and oci-dir, complete or not at all.

    export(store, [parse("app:1.0")], Path("app.tar"))            # docker-archive
    export(store, refs, 1, ExportOptions(format="oci-archive"))   # stream to fd 1

The completeness check (``plan``) runs under the shared store lock before the
first byte is written; the exported digests are leased while they are written,
and each exported ref's "used" time is updated. The network is touched only
with ``pull=True``, through ``cas.pull`` (imported only then).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cas.errors import MissingBlobs, NotCached, StoreError
from cas.export import docker_archive, oci
from cas.export.output import OutputError, archive_output, check_stream, dir_output
from cas.export.plan import ExportPlan, ImagePlan, UsageError, plan
from cas.export.tarwriter import TarWriter, TruncatedFile
from cas.manifest import Descriptor, Platform
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import DEFAULT_LOCK_TIMEOUT, Store
from cas.store.fs import Linker

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
STDOUT = 1

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportPlan",
    "ExportResult",
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
    pull_options: Any = None  # a cas.pull.PullOptions for those pulls
    warn: Callable[[str], None] | None = None  # e.g. the one "copying instead of linking" warning
    on_wait: Callable[[str], None] | None = None  # waiting for the store lock
    on_plan: Callable[[ExportPlan], None] | None = None  # the checked plan, before the first byte
    on_blob: Callable[[Descriptor], None] | None = None  # after each blob is written
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT


@dataclass
class ExportResult:
    output: str
    format: str
    images: list[dict] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0  # blob bytes exported
    written: int = 0  # archive bytes written (tar formats)
    linked: bool = True  # oci-dir: hard links (False: fell back to copies)
    sendfile: bool = True  # tar formats: os.sendfile (False: the read/write fallback)
    pulled: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


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
            raise UsageError("oci-dir writes a directory, not a stream", hint="give -o DIR, or use --format oci-archive")
        check_stream(output)
    tag = parse_reference(options.tag) if options.tag is not None else None
    if tag is not None and len({str(r) for r in references}) > 1:  # plan() checks the images too
        raise UsageError(
            f"--tag renames one image, but {len(references)} references were given",
            hint="export the images one by one, or drop --tag",
        )

    result = ExportResult(output="-" if isinstance(output, int) else str(output), format=options.format)
    if options.pull:
        result.pulled = _pull_missing(store, references, options)

    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.on_wait):
        checked = plan(store, references, tag=tag, platform=options.platform)
        if options.on_plan is not None:
            options.on_plan(checked)
        blobs = checked.blobs
        with store.index.lease(b.digest for b in blobs), _store_damage():
            if options.format == "oci-dir":
                assert not isinstance(output, int)
                linker = Linker(options.warn or (lambda message: None))
                with dir_output(Path(output)) as tmp:
                    oci.write_dir(tmp, store, checked, linker, options.on_blob)
                result.linked = not linker.copying
            else:
                write = docker_archive.write_archive if options.format == "docker-archive" else oci.write_archive
                with archive_output(output) as fd:
                    writer = TarWriter(fd)
                    write(writer, store, checked, options.on_blob)
                result.written = writer.written
                result.sendfile = writer.sendfile
            store.index.touch_refs(checked.refs)

    result.images = [
        {
            "ref": image.ref,
            "names": [name.familiar for name in image.names],
            "manifest": str(image.manifest.digest),
            "platform": image.platform,
            "size": sum(b.size for b in image.blobs),
        }
        for image in checked.images
    ]
    result.blobs = len(blobs)
    result.bytes = sum(b.size for b in blobs)
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _store_damage() -> Iterator[None]:
    try:
        yield
    except TruncatedFile as exc:
        raise StoreError(
            f"a blob in the store changed while it was exported ({exc})",
            hint="run `cas verify`, then pull the image again; nothing was kept",
        ) from exc


def _pull_missing(store: Store, references: Sequence[Reference], options: ExportOptions) -> list[str]:
    """Pull each reference that is not cached, is incomplete, or is cached for another platform."""
    needed = []
    for reference in references:
        try:
            plan(store, [reference], platform=options.platform)
        except (NotCached, MissingBlobs):
            needed.append(reference)
    if not needed:
        return []
    from cas.pull import PullOptions, pull  # httpx and the registry client: only on --pull

    pull_options = options.pull_options or PullOptions(platform=options.platform)
    return [pull(store, reference, pull_options).ref for reference in needed]
