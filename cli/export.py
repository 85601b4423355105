"""cas export REF... -o FILE|DIR|-: write a complete archive from the store, or nothing at all."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from cli import budget, options, output

if TYPE_CHECKING:
    from cas.export import ExportOptions, ExportResult


class Format(StrEnum):
    docker_archive = "docker-archive"
    oci_archive = "oci-archive"
    oci_dir = "oci-dir"


Refs = Annotated[
    list[str] | None,
    options.cached_ref("REF...", "Cached image references: alpine, host:5000/app:1.0, name@sha256:..."),
]
Output = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        help="Archive file, '-' for stdout (| docker load), or a directory for oci-dir.",
    ),
]
FormatOpt = Annotated[
    Format,
    typer.Option("--format", metavar="FORMAT", help="docker-archive (docker/podman load), oci-archive, or oci-dir."),
]
Tag = Annotated[
    str | None,
    typer.Option("--tag", "-t", metavar="REF", help="NAME:TAG to give the one exported image instead of its own name."),
]
Pull = Annotated[
    bool,
    typer.Option(
        "--pull",
        help="First pull the references that are missing, incomplete or hold a blob changed since commit"
        " (only those blobs are fetched).",
    ),
]
Verify = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Re-hash every blob while it is written (the same pass) and fail on any mismatch: end-to-end proof.",
    ),
]
Since = Annotated[
    list[str] | None,
    typer.Option(
        "--since",
        metavar="REF",
        help="Write a delta archive: only the layers none of these cached BASE images holds (repeatable).",
    ),
]
SinceInventory = Annotated[
    str | None,
    typer.Option(
        "--since-inventory",
        metavar="PATH",
        help="Write a delta against what the receiver holds: its `cas images --json` output.",
    ),
]


def export(
    out: Output,
    refs: Refs = None,
    fmt: FormatOpt = Format.docker_archive,
    tag: Tag = None,
    pull: Pull = False,
    verify: Verify = False,
    since: Since = None,
    since_inventory: SinceInventory = None,
    file: options.ImageSetFile = None,
    platform: options.ExportPlatform = None,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    lock_timeout: options.LockTimeout = None,
    max_size: options.MaxSize = None,
    max_age: options.MaxAge = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """Export cached images as one archive that docker load, podman load and skopeo accept.

    Every manifest, config and layer is checked to be in the store before the first byte is
    written; if any is missing, nothing is written and each missing digest is named.

    \b
    Examples:
      cas export alpine:3.20 127.0.0.1:5000/app:1.0 -o images.tar
      cas export app:1.0 -o - | docker load
      cas export --pull app:1.0 --format oci-dir -o app-layout/
      cas export -f images.lock -o site.tar          # exactly the locked digests
    """
    import sys
    from pathlib import Path

    from cas import reference
    from cas.export import ExportOptions
    from cas.manifest import Platform

    options.one_stdin(file, password_stdin)
    entries = _entries(refs, file)
    to_stdout = out == "-"
    delta = _check_combinations(to_stdout, as_json, fmt, since, since_inventory)
    opts = ExportOptions(
        format="delta" if delta else fmt.value,
        since=[reference.parse(text) for text in since or []],
        since_inventory=Path(since_inventory) if since_inventory else None,
        tag=tag,
        platform=Platform.parse(platform) if platform else None,
        pull=pull,
        warn=lambda message: output.notice(f"warning: {message}"),
        on_wait=output.notice,
        lock_timeout=lock_timeout,
        verify=verify,
    )
    if pull:
        opts.pull_options = options.pull_options(
            platform,
            insecure=insecure,
            username=username,
            password_stdin=password_stdin,
            lock_timeout=lock_timeout,
            quiet=quiet,
            as_json=as_json,
        )

    if to_stdout:
        sys.stdout.flush()
    result, eviction = _run(entries, file, 1 if to_stdout else Path(out), opts, (max_size, max_age))

    if as_json:
        output.emit_json("export", {**result.to_json(), **budget.json_field(eviction)})
    elif not quiet:
        budget.tell(eviction)
        output.notice(summary(result))


def _run(entries: list, file: str | None, target, opts: ExportOptions, limits: tuple) -> tuple[ExportResult, object]:
    """The export (a lock file's pinned lines first checked, or with --pull fetched), then the size
    budget when --pull added blobs (what was exported is kept)."""
    import contextlib

    from cas.export import export as run_export
    from cas.store import Store

    store = Store()
    observer = opts.pull_options.observer if opts.pull_options is not None else contextlib.nullcontext()
    try:
        with observer:
            _locked(store, entries, file, opts.pull_options)
            result = run_export(store, [entry.name for entry in entries], target, opts)
        used = [(image.ref, image.platform) for image in result.images]
        eviction = budget.keep(store, limits, used, opts.lock_timeout, say=False) if result.pulled else None
    finally:
        store.close()
    return result, eviction


def _entries(refs: list[str] | None, file: str | None) -> list:
    """The arguments and the images of -f FILE; -f was --format's short form before it named a file."""
    from pathlib import Path

    from cas import imagesets
    from cas.errors import UsageError

    if file in list(Format) and not Path(file).exists():
        raise UsageError(f"-f names an image-set file; no file {file}", hint=f"for the format, write --format {file}")
    return imagesets.entries(refs, file)


def _locked(store, entries: list, file: str | None, pull_options) -> None:
    """Pinned lines (a lock file) are exported only as pinned: with --pull, pulled by digest first."""
    from cas import imagesets

    pinned = [entry for entry in entries if entry.pinned]
    if pinned and pull_options is not None:
        from cas.pullset import pull_set

        failed = next((o.error for o in pull_set(store, pinned, pull_options) if o.error), None)
        if failed is not None:
            raise failed
    imagesets.check_pins(store, entries, file)


def _check_combinations(
    to_stdout: bool, as_json: bool, fmt: Format, since: list[str] | None, since_inventory: str | None
) -> bool:
    """Refuse the options that cannot work together; True for a delta archive."""
    from cas.errors import UsageError

    if to_stdout and as_json:
        raise UsageError(
            "--json prints on stdout, where -o - sends the archive", hint="drop --json, or write to a file"
        )
    delta = bool(since or since_inventory)
    if delta and fmt is not Format.docker_archive:
        raise UsageError("a delta archive has its own format", hint="drop --format when using --since")
    return delta


def summary(result: ExportResult) -> str:
    """What was written: what --pull fetched first, then the images, their format, counts and where."""
    names = ", ".join(_shown(result))
    pulled = f"pulled {', '.join(result.pulled)} first (--pull)\n" if result.pulled else ""
    if result.delta is not None:
        d, size = result.delta, output.human_size
        return (
            f"{pulled}exported {names} as a delta against {', '.join(d.bases) or 'nothing'}: carried "
            f"{d.carried_blobs} blob(s), {size(d.carried_bytes)}; the receiver must hold "
            f"{d.required_blobs}, {size(d.required_bytes)} ({result.seconds:.2f}s)"
        )
    how = "" if result.format != "oci-dir" or result.linked else " (copied, not linked)"
    how += ", every blob re-hashed" if result.verified else ""
    return (
        f"{pulled}exported {names} as {result.format}: {result.blobs} blob(s), {output.human_size(result.bytes)} "
        f"to {result.output}{how} ({result.seconds:.2f}s)"
    )


def _shown(result: ExportResult) -> list[str]:
    """Each exported name once: a reference with several platforms as NAME (PLATFORM, ...)."""
    under = {digest for index in result.indexes for digest in index.manifests}
    shown = [
        f"{', '.join(index.names) or '(unnamed)'} ({', '.join(map(str, index.platforms))})" for index in result.indexes
    ]
    for image in result.images:
        if image.names or image.manifest not in under:
            shown.append(", ".join(image.names) or image.ref)
    return shown
