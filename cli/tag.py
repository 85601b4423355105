"""cas tag SRC NEW: give a cached image a second name, in the store only."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def tag(
    source: Annotated[str, options.cached_ref("SRC", "A cached image reference, as `cas images` lists it.")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The new name: host:5000/team/app:1.0.")],
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Give a cached image another name (records only, no bytes copied); `cas rm NEW` forgets only that name.

    \b
    Examples:
      cas tag alpine:3.20 registry.example/base/alpine:stable
      cas tag 127.0.0.1:5000/app:1.0 app:release && cas export app:release -o app.tar
    """
    from cas import reference
    from cas.store import Store
    from cas.tagging import tag as run_tag

    src, dst = reference.parse(source), reference.parse(new)
    written = run_tag(Store(), src, dst)
    rows = [{"ref": r.ref, "platform": r.platform, "digest": str(r.digest)} for r in written]
    if as_json:
        output.emit_json("tag", {"source": str(src), "images": rows})
    elif not quiet:
        platforms = ", ".join(r.platform for r in written if r.platform)
        output.notice(f"tagged {src} as {dst}: {output.short_digest(rows[0]['digest'])} {platforms}".rstrip())
