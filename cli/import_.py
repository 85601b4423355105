"""cas import PATH|-: an archive into the store, verified; images recorded only when complete."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from cli import budget, options, output

if TYPE_CHECKING:
    from cas.importer import ImportResult


class Format(StrEnum):
    docker_archive = "docker-archive"
    oci_archive = "oci-archive"
    oci_dir = "oci-dir"


Source = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="A docker-archive (docker save), an oci-archive, a cas delta archive, an OCI layout directory, "
        "or '-' for stdin.",
    ),
]
FormatOpt = Annotated[
    Format | None,
    typer.Option(
        "--format",
        "-f",
        metavar="FORMAT",
        help="Refuse anything but this format: docker-archive, oci-archive or oci-dir (default: detected).",
    ),
]
Tag = Annotated[
    str | None,
    typer.Option(
        "--tag", "-t", metavar="REF", help="NAME:TAG for the one image of the archive (its names are dropped)."
    ),
]


def import_(
    path: Source,
    fmt: FormatOpt = None,
    tag: Tag = None,
    lock_timeout: options.LockTimeout = None,
    max_size: options.MaxSize = None,
    max_age: options.MaxAge = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Import images from an archive: every blob is hashed against its digest before it is stored.

    Reads docker save output (old and new layouts), skopeo's docker-archive and oci-archive, OCI layout directories
    and cas delta archives; from a file or streamed from stdin (docker save IMG | cas import -). An image whose blobs
    are neither in the archive nor in the store is refused, naming each missing digest, and no reference is recorded.

    \b
    Examples:
      cas import app.tar
      docker save app:1.0 | cas import -
      cas import --tag app:1.0 app-layout/
    """
    import contextlib
    import sys
    from pathlib import Path

    from cas.errors import UsageError
    from cas.importer import ImportOptions, import_archive
    from cas.store import Store

    if path == "-" and sys.stdin.isatty():
        raise UsageError(
            "refusing to read an archive from a terminal", hint="pipe one in: docker save IMG | cas import -"
        )
    source = sys.stdin.buffer if path == "-" else Path(path)
    bar = _Bar(source) if output.want_progress(quiet, as_json) else contextlib.nullcontext()
    opts = ImportOptions(
        format=fmt.value if fmt is not None else None, tag=tag, on_wait=output.notice, lock_timeout=lock_timeout
    )
    store = Store()
    try:
        with bar:
            if isinstance(bar, _Bar):
                opts.on_bytes = bar.advance
            result = import_archive(store, source, opts)
        imported = [(ref, image.platform) for image in result.images for ref in image.refs]
        eviction = budget.keep(store, (max_size, max_age), imported, lock_timeout, say=False)
    finally:
        store.close()

    if as_json:
        output.emit_json("import", {**result.to_json(), **budget.json_field(eviction)})
    elif not quiet:
        output.notice(summary(result))
        budget.tell(eviction)


def summary(result: ImportResult) -> str:
    """A line per image recorded (and a note on a manifest cas built), then the blob counts."""
    size = output.human_size
    lines = []
    for image in result.images:
        names = ", ".join(image.names) or f"unnamed, recorded as {image.refs[0]}"
        lines.append(f"imported {names}: {image.manifest[:19]} {image.platform or ''}")
        if image.built_manifest:
            lines.append(
                f"  note: legacy layout: cas built an OCI manifest for its uncompressed layers; its digest "
                f"{image.manifest[:19]} differs from the registry's"
            )
    lines.append(
        f"{result.format} from {result.source}: stored {result.stored_blobs} blob(s), {size(result.stored_bytes)}; "
        f"reused {result.reused_blobs}, {size(result.reused_bytes)} ({result.seconds:.2f}s)"
    )
    return "\n".join(lines)


class _Bar:
    """One transient bar of the bytes stored so far (a file's size is the total; a pipe has none)."""

    def __init__(self, source: object) -> None:
        from pathlib import Path

        from rich.progress import BarColumn, Progress, TextColumn

        from cli.progress import size_columns

        total = source.stat().st_size if isinstance(source, Path) and source.is_file() else None
        self._progress = Progress(TextColumn("importing"), BarColumn(), *size_columns(), transient=True)
        self._task = self._progress.add_task("import", total=total)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)
