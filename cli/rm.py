"""cas rm REF...: forget references; their blobs are freed by the next prune."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def rm(
    refs: Annotated[list[str], typer.Argument(help="Cached references to remove (as `cas images` lists them).")],
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Remove only this cached OS/ARCH[/VARIANT] (default: every platform)."),
    ] = None,
    as_json: options.Json = False,
) -> None:
    """Remove images from the cache index; `cas prune` then frees the blobs no other image needs."""
    from cas.images import remove_images
    from cas.manifest import Platform
    from cas.store import Store

    removed = remove_images(Store(), refs, Platform.parse(platform) if platform else None)
    if as_json:
        output.emit_json({"removed": removed})
        return
    for row in removed:
        print(f"removed {row['ref']}" + (f" ({row['platform']})" if row["platform"] else ""))
    output.notice("run `cas prune` to free the blobs no remaining image needs")
