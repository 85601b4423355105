"""cas push REF DEST: copy a cached image to a registry, then one summary line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import options, output, sets

if TYPE_CHECKING:
    from cas.push import PushResult


def push(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        options.cached_ref("REF", "A cached image: alpine, host:5000/app:1.0, name@sha256:..."),
    ] = None,
    dest: Annotated[
        str | None,
        typer.Argument(
            metavar="DEST",
            help="Where to push it: host:5000/team/app:1.0 (a tag or a digest); with -f, a prefix: host:5000/mirror.",
        ),
    ] = None,
    file: options.ImageSetFile = None,
    platform: Annotated[
        str | None,
        options.one_platform(
            "Push only this platform's manifest of a multi-platform image (needed when not every platform is cached)."
        ),
    ] = None,
    jobs: options.Jobs = None,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    lock_timeout: options.LockTimeout = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """Push a cached image to a registry: blobs it lacks first (mounted from another repository of the same
    registry when possible), manifests last, byte for byte, so the digest stays the same.

    \b
    Examples:
      cas push alpine:3.20 registry.example:5000/mirror/alpine:3.20
      cas push --platform linux/arm64 ghcr.io/org/tool:2 127.0.0.1:5000/tool:2
      cas push -f images.lock registry.example:5000/mirror   # each as mirror/REPOSITORY:TAG
    """
    from cas import imagesets
    from cas.manifest import Platform
    from cas.push import PushOptions
    from cas.push import push as run_push
    from cas.store import Store

    options.one_stdin(file, password_stdin)
    entries = imagesets.read(file) if file is not None else None
    todo = sets.pairs(ref, dest, entries, "push", cached=True)
    opts = PushOptions(
        platform=Platform.parse(platform) if platform else None,
        jobs=jobs,
        insecure=insecure,
        credentials=options.read_credentials(username, password_stdin),
        observer=options.observer(quiet, as_json),
        lock_timeout=lock_timeout,
    )
    store = Store()
    try:
        if entries is not None:
            imagesets.check_pins(store, entries, file)
        with opts.observer:
            sets.run_each(
                todo,
                lambda src, dst: run_push(store, src, dst, opts),
                summary,
                command="push",
                quiet=quiet,
                as_json=as_json,
                body=ctx.meta.setdefault(output.PARTIAL, {}),
            )
    finally:
        store.close()


def summary(result: PushResult) -> str:
    size = output.human_size
    top = result.plan.top
    return (
        f"{result.destination}: {str(top.digest)[:19]} ({len(result.plan.manifests)} manifest(s))  "
        f"uploaded {result.uploaded_blobs} blob(s), {size(result.uploaded_bytes)}; "
        f"mounted {result.mounted_blobs}, {size(result.mounted_bytes)}; "
        f"skipped {result.skipped_blobs}, {size(result.skipped_bytes)} ({result.seconds:.2f}s)"
    )
