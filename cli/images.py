"""cas images [PATTERN]: the cached references."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cli import options, output


def images(
    pattern: Annotated[
        str | None,
        typer.Argument(
            metavar="[PATTERN]",
            help="Only references matching this glob, with or without the registry: 'alpine', 'app:1.*', '*/app:*'.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the references only, one per line.")] = False,
    digests: Annotated[
        bool,
        typer.Option("--digests", help="Show whole digests, and the platform manifest's beside the reference's."),
    ] = False,
    as_json: options.Json = False,
) -> None:
    """List cached images: reference, digest, platform, size and when each was pulled.

    DIGEST is the reference's own digest, what the registry calls it (the index's for a
    multi-platform tag), so `cas pull NAME@DIGEST` pulls the same image.

    \b
    Examples:
      cas images
      cas images 'alpine*' --digests
      cas images -q '127.0.0.1:5000/*' | xargs cas rm
    """
    from cas.images import list_images
    from cas.store import Store

    skipped: list[str] = []
    rows = [row for row in list_images(Store(), skipped) if pattern is None or matches(row["ref"], pattern)]
    if skipped:
        output.notice(
            f"warning: skipped {len(skipped)} malformed image record(s): {', '.join(sorted(skipped))}; "
            "`cas rm` them, then `cas pull` to cache them again"
        )
    if as_json:
        output.emit_json("images", {"images": [to_json(row) for row in rows]})
    elif quiet:
        for row in rows:
            print(row["ref"])
    else:
        render(rows, digests)


def matches(ref: str, pattern: str) -> bool:
    """A glob against the full reference, its short form or its path on the registry; a bare name matches all its tags."""
    from fnmatch import fnmatchcase

    from cas.errors import CasError
    from cas.reference import parse

    names = [ref, ref.split("/", 1)[-1]]
    try:
        names.append(parse(ref).familiar)
    except CasError:
        pass
    return any(fnmatchcase(name, glob) for name in names for glob in (pattern, f"{pattern}:*", f"{pattern}@*"))


def to_json(row: dict) -> dict:
    from cas.jsonout import timestamp

    return {
        **{key: value for key, value in row.items() if key not in ("pulled", "used")},
        "pulled_at": timestamp(row["pulled"]),
        "used_at": timestamp(row["used"]),
    }


def render(rows: list[dict], full: bool) -> None:
    digest = (lambda d: d) if full else output.short_digest
    head = ("REFERENCE", "DIGEST", *(("MANIFEST",) if full else ()), "PLATFORM", "SIZE", "PULLED", "")
    table = [head]
    now = time.time()
    for row in rows:
        note = "needs pull (cas verify --repair removed blobs)" if row["needs_pull"] else ""
        table.append(
            (
                row["ref"],
                digest(row["digest"]),
                *((row["manifest"],) if full else ()),
                row["platform"] or "-",
                output.human_size(row["size"]),
                output.ago(row["pulled"], now),
                note,
            )
        )
    output.table(table)
