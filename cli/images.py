"""cas images: the cached references."""

from __future__ import annotations

import time

from cli import options, output


def images(as_json: options.Json = False) -> None:
    """List cached images with digest, platform, size and when they were pulled."""
    from cas.images import list_images
    from cas.store import Store

    skipped: list[str] = []
    rows = list_images(Store(), skipped)
    if skipped:
        output.notice(
            f"warning: skipped {len(skipped)} malformed image record(s): {', '.join(sorted(skipped))}; "
            "`cas rm` them, then `cas pull` to cache them again"
        )
    if as_json:
        output.emit_json(rows)
        return
    table = [("REFERENCE", "MANIFEST", "PLATFORM", "SIZE", "PULLED", "")]
    for row in rows:
        note = "needs pull (cas verify --repair removed blobs)" if row["needs_pull"] else ""
        table.append(
            (
                row["ref"],
                row["manifest"][7:19],
                row["platform"] or "-",
                output.human_size(row["size"]),
                output.ago(row["pulled"], time.time()),
                note,
            )
        )
    output.table(table)
