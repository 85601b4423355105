"""cas prune: free blobs no kept image needs, with optional LRU / age policies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import options, output

if TYPE_CHECKING:
    from cas.gc import Plan


def _size(text: str) -> int:
    from cas.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _duration(text: str) -> float:
    from cas.sizes import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def prune(
    keep_storage: Annotated[
        int | None,
        typer.Option(
            "--keep-storage",
            parser=_size,
            metavar="SIZE",
            help="Evict least-recently-used images until blobs fit in SIZE (10GB, 500MiB, bytes). Blobs a kept image shares stay.",
        ),
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            parser=_duration,
            metavar="DURATION",
            help="Evict images not pulled or exported for DURATION (7d, 12h, 30m).",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Evict every image: empty the store (blobs of running pulls/exports stay).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print what would go and how many bytes; change nothing.")
    ] = False,
    lock_timeout: options.LockTimeout = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Remove blobs no kept image needs and stale downloads; evict images by --keep-storage, --older-than or --all.

    Each evicted image is listed with the bytes its removal freed (a blob two evicted images
    shared counts for the first); --dry-run says what it would free and changes nothing.

    \b
    Examples:
      cas prune --dry-run --keep-storage 10GiB
      cas prune --older-than 7d
    """
    from cas.gc import Policy
    from cas.gc import prune as run_prune
    from cas.store import Store

    policy = Policy(keep_storage=keep_storage, older_than=older_than, everything=everything)
    result = run_prune(Store(), policy, dry_run=dry_run, lock_timeout=lock_timeout, on_wait=output.notice)
    if as_json:
        output.emit_json("prune", result.to_json())
    elif not quiet:
        render(result)
    for message in result.errors:
        output.error(message)
    if result.errors:
        raise typer.Exit(1)


def render(result: Plan) -> None:
    size = output.human_size
    verb, frees = ("would remove", "would free") if result.dry_run else ("removed", "freed")
    per_image, unreferenced = result.freed_by_image()
    for image, freed in per_image:
        print(
            f"{verb} image {image.ref}: {frees} {size(freed)} of its {size(image.size)}"
            f" ({image.platform or 'unknown platform'})"
        )
    if unreferenced:
        print(f"{verb} blobs no image needs: {frees} {size(unreferenced)}")
    if result.dry_run:
        for digest, nbytes, _ in result.blobs:
            print(f"{verb} blob {digest} ({size(nbytes)})")
        for stray in result.strays:
            print(f"{verb} stray {stray.kind} {stray.path}")
        for entry in result.ingests:
            print(f"{verb} stale download {entry.label} ({size(entry.partial)})")
    parts = [f"{len(result.images)} image(s)", f"{len(result.blobs)} blob(s)"]
    if result.strays:
        parts.append(f"{len(result.strays)} stray file(s)")
    if result.ingests:
        parts.append(f"{len(result.ingests)} stale download(s)")
    head = "Would free" if result.dry_run else "Freed"
    print(
        f"{head} {size(result.freed_bytes)}: {', '.join(parts)}; kept {result.kept_images} image(s), {result.kept_blobs} blob(s), {size(result.kept_bytes)}"
    )
    if result.over_target:
        output.notice(
            f"warning: {size(result.kept_bytes)} of blobs remain, above --keep-storage {size(result.target)}: "
            f"{result.leased_blobs} blob(s) are held by running pulls or exports; prune again when they finish"
        )
