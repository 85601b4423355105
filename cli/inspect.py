"""cas inspect REF: manifest and config summary of a cached image."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def inspect(
    ref: Annotated[str, typer.Argument(help="A cached image reference.")],
    platform: options.CachedPlatform = None,
    as_json: options.Json = False,
) -> None:
    """Show a cached image's manifest and config (reads the store only)."""
    from cas import reference
    from cas.images import inspect as run_inspect
    from cas.manifest import Platform
    from cas.store import Store

    info = run_inspect(Store(), reference.parse(ref), Platform.parse(platform) if platform else None)
    if as_json:
        output.emit_json(info)
        return
    cfg = info["config"]
    lines = [
        ("Reference", info["ref"]),
        ("Digest", info["digest"]),
        ("Manifest", f"{info['manifest']} ({info['media_type']})"),
        ("Platform", info["platform"] or "-"),
        ("Config", cfg["digest"]),
        ("Created", cfg["created"] or "-"),
        ("Entrypoint", " ".join(cfg["entrypoint"] or []) or "-"),
        ("Cmd", " ".join(cfg["cmd"] or []) or "-"),
        ("Size", output.human_size(info["size"])),
        ("Layers", str(len(info["layers"]))),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    for n, layer in enumerate(info["layers"], 1):
        print(f"  {n:>3}  {layer['digest']}  {output.human_size(layer['size']):>10}  {layer['media_type']}")
