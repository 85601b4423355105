"""cas rm REF...: forget references; their blobs are freed by the next prune."""

from __future__ import annotations

from typing import Annotated

from cli import options, output


def rm(
    refs: Annotated[
        list[str],
        options.cached_ref("REF...", "Cached references to remove (as `cas images` lists them)."),
    ],
    platform: Annotated[
        str | None, options.one_platform("Remove only this cached platform (default: every platform of each REF).")
    ] = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Remove images from the cache index; `cas prune` then frees the blobs no other image needs.

    \b
    Examples:
      cas rm 127.0.0.1:5000/app:1.0 && cas prune
      cas rm --platform linux/arm/v7 127.0.0.1:5000/app:1.0
      cas images -q 'registry.example/*' | xargs cas rm
    """
    from cas.images import remove_images
    from cas.manifest import Platform
    from cas.store import Store

    removed = remove_images(Store(), refs, Platform.parse(platform) if platform else None)
    if as_json:
        output.emit_json("rm", {"images": removed})
        return
    if quiet:
        return
    for row in removed:
        print(f"removed {row['ref']}" + (f" ({row['platform']})" if row["platform"] else ""))
    output.notice("run `cas prune` to free the blobs no remaining image needs")
