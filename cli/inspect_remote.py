"""`cas inspect --remote REF`: the registry's answer, shown as the local inspect shows the store's."""

from __future__ import annotations

import sys
from collections.abc import Callable

from cli import output


def inspect_remote(ref, platform, what: str, options, render: Callable[[dict], None]) -> None:
    """``what``: raw (the top object's bytes, or the platform's manifest with --platform), config,
    digest (`crane digest`), json or text."""
    from cas import remote

    found = remote.inspect(ref, options, platform, config=what not in ("raw", "digest"))
    picked = platform is not None and found.index is not None
    if what == "digest":
        print(found.manifest if picked else found.digest)
    elif what in ("raw", "config"):
        data = found.config if what == "config" else found.manifest_data if picked else found.data
        sys.stdout.buffer.write(data)  # as served, no newline added: they hash to the digest
    elif what == "json":
        output.emit_json("inspect", {"remote": True, **found.to_json()})
    else:
        _text(found.to_json(), render)


def _text(info: dict, render: Callable[[dict], None]) -> None:
    if "platforms" in info:
        print(f"Index: {info['digest']} ({info['media_type']})")
        rows = [("  PLATFORM", "MANIFEST", "SIZE")]
        rows += [(f"  {p['platform'] or '-'}", p["manifest"], output.human_size(p["size"])) for p in info["platforms"]]
        output.table(rows)
    if "config" not in info:
        output.notice("no manifest for this host's platform: pick one with --platform")
        return
    render({**info, "media_type": info["manifest_media_type"]})
