"""cas stats: what the cache saved (downloads avoided, bytes exported and evicted), like `ccache -s`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def stats(
    reset: Annotated[
        bool, typer.Option("--reset", help="Print the counters, then start them again from zero.")
    ] = False,
    as_json: options.Json = False,
) -> None:
    """Show cumulative counters: bytes downloaded and reused (the hit ratio), exported, evicted, and since when.

    \b
    Examples:
      cas stats
      cas stats --json | jq .hit_ratio
      cas stats --reset
    """
    import time

    from cas import stats as counters
    from cas.store import Store

    store = Store()
    shown = counters.reset(store.metadata) if reset else counters.read(store.metadata)
    if as_json:
        output.emit_json("stats", {**shown.to_json(), "reset": reset})
        return
    c, size = shown.counters, output.human_size
    ratio = shown.hit_ratio
    since = output.ago(shown.since, time.time()) if shown.since is not None else "nothing counted yet"
    output.table(
        [
            ("since:", since),
            ("hit ratio:", f"{ratio:.1%} of bytes reused" if ratio is not None else "- (no pull yet)"),
            ("downloaded:", f"{size(c['downloaded_bytes'])} in {c['downloaded_blobs']} blob(s)"),
            ("reused:", f"{size(c['reused_bytes'])} in {c['reused_blobs']} blob(s), not downloaded again"),
            ("served:", f"{size(c['served_bytes'])} by cas serve"),
            ("exported:", f"{size(c['exported_bytes'])} in {c['exports']} export(s)"),
            ("evicted:", f"{size(c['evicted_bytes'])}, {c['evicted_images']} image(s), by the size budget"),
        ]
    )
    if reset:
        print("counters reset")
