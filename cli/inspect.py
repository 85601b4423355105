"""cas inspect REF: what a cached image is and how it runs, read from the store only."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import options, output


def inspect(
    ref: Annotated[
        str,
        options.cached_ref("REF", "A cached image reference, as `cas images` lists it."),
    ],
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Print the manifest bytes exactly as stored (the index, for a multi-platform tag)."),
    ] = False,
    config: Annotated[bool, typer.Option("--config", help="Print the image config blob exactly as stored.")] = False,
    platform: options.CachedPlatform = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask REF's registry, not the store (nothing is stored or changed).")
    ] = False,
    digest: Annotated[
        bool, typer.Option("--digest", help="Print only the digest REF resolves to (with --platform: its manifest's).")
    ] = False,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    hosts_dir: options.HostsDir = None,
    timeout: options.Timeout = None,
    as_json: options.Json = False,
) -> None:
    """Show a cached image's manifest and config: platform, env, entrypoint, labels, layers.

    \b
    Examples:
      cas inspect alpine:3.20
      cas inspect alpine:3.20 --raw | sha256sum     # the digest `cas images --digests` shows
      cas inspect alpine:3.20 --config | jq .config.Env
      cas inspect --platform linux/arm64 alpine:3.20
      cas inspect --remote --digest 127.0.0.1:5000/app:1.0   # as `crane digest`
    """
    from cas import images, reference
    from cas.errors import UsageError
    from cas.manifest import Platform
    from cas.store import Store

    if sum((raw, config, as_json)) > 1:
        raise UsageError("--raw, --config and --json each print one thing", hint="choose one of them")
    if digest and (raw or config or as_json):
        raise UsageError("--digest prints the digest alone", hint="drop --raw, --config or --json")
    parsed = reference.parse(ref)
    picked = Platform.parse(platform) if platform else None
    if remote:
        from cli.inspect_remote import inspect_remote

        what = "raw" if raw else "config" if config else "digest" if digest else "json" if as_json else "text"
        creds = options.remote_options(insecure, username, password_stdin, hosts_dir, timeout)
        return inspect_remote(parsed, picked, what, creds, render)
    if digest:
        record = images.record_of(Store(), parsed, picked)
        print(record.manifest if picked else record.digest)
        return
    if raw or config:
        data = images.raw(Store(), parsed, "config" if config else "manifest", picked)
        sys.stdout.buffer.write(data)  # the stored bytes, no newline added: they hash to the digest
        return
    info = images.inspect(Store(), parsed, picked)
    if as_json:
        output.emit_json("inspect", info)
    else:
        render(info)


def render(info: dict) -> None:
    cfg = info["config"]
    lines = [
        ("Reference", info["ref"]),
        ("Digest", info["digest"]),
        ("Manifest", f"{info['manifest']} ({info['media_type']})"),
        ("Platform", info["platform"] or "-"),
        ("Config", cfg["digest"]),
        ("Created", cfg["created_at"] or "-"),
        ("Entrypoint", _command(cfg["entrypoint"])),
        ("Cmd", _command(cfg["cmd"])),
        ("Working dir", cfg["working_dir"] or "-"),
        ("Size", output.human_size(info["size"])),
    ]
    width = max(len(key) for key, _ in lines + [("Labels", "")])
    for key, value in lines:
        print(f"{key + ':':<{width + 1}}  {value}")
    for title, items in (("Env", cfg["env"]), ("Labels", [f"{k}={v}" for k, v in sorted(cfg["labels"].items())])):
        print(f"{title + ':':<{width + 1}}  {'-' if not items else ''}".rstrip())
        for item in items:
            print(f"  {item}")
    print(f"Layers: {len(info['layers'])}")
    rows = [("  #", "DIGEST", "SIZE", "MEDIA TYPE")]
    for n, layer in enumerate(info["layers"], 1):
        rows.append((f"{n:>3}", layer["digest"], output.human_size(layer["size"]), layer["media_type"]))
    output.table(rows)


def _command(argv: list[str] | None) -> str:
    """An argv as a shell line: ["sh", "-c", "echo hi"] -> sh -c 'echo hi'."""
    import shlex

    return shlex.join(argv) if argv else "-"
