"""cas copy SRC DEST: registry to registry through the store, then one summary line per image."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import budget, options, output, sets

Source = Annotated[str | None, options.cached_ref("SRC", "The image to copy: host:5000/app:1.0, name@sha256:...")]
Dest = Annotated[
    str | None,
    typer.Argument(metavar="DEST", help="Where it goes: host:5000/team/app:1.0; with -f, a prefix: host:5000/mirror."),
]
AllPlatforms = Annotated[
    bool, typer.Option("--all-platforms", help="Every platform of a multi-platform image: the index is copied whole.")
]
DestUsername = Annotated[
    str | None,
    typer.Option(
        "--username",
        "-u",
        metavar="USER",
        help="DEST's registry user name (SRC's too when it is the same registry), with --password-stdin "
        "(else `cas login`).",
    ),
]
SrcUsername = Annotated[
    str | None,
    typer.Option(
        "--src-username", metavar="USER", help="SRC's registry user name, with --src-password-stdin (else `cas login`)."
    ),
]
SrcPasswordStdin = Annotated[
    bool, typer.Option("--src-password-stdin", help="Read SRC's registry password or token from stdin.")
]


def copy(
    ctx: typer.Context,
    source: Source = None,
    dest: Dest = None,
    file: options.ImageSetFile = None,
    platform: options.PlatformsOpt = None,
    all_platforms: AllPlatforms = False,
    jobs: options.Jobs = None,
    connections: options.Connections = None,
    insecure: options.Insecure = False,
    username: DestUsername = None,
    password_stdin: options.PasswordStdin = False,
    src_username: SrcUsername = None,
    src_password_stdin: SrcPasswordStdin = False,
    lock_timeout: options.LockTimeout = None,
    max_size: options.MaxSize = None,
    max_age: options.MaxAge = None,
    hosts_dir: options.HostsDir = None,
    timeout: options.Timeout = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """Copy an image from one registry or repository to another through the store: pull what the store lacks,
    push what DEST lacks (mounted across repositories where it can), digest unchanged.

    \b
    Examples:
      cas copy 127.0.0.1:5000/app:1.0 127.0.0.1:5000/release/app:1.0
      cas copy --all-platforms ghcr.io/org/tool:2 registry.example/tools/tool:2
      cas copy -f images.lock registry.example/mirror
      echo "$TOKEN" | cas copy -u ci --password-stdin ghcr.io/org/tool:2 registry.example/tools/tool:2
    """
    import dataclasses

    from cas import imagesets
    from cas.copy import copy as run_copy
    from cas.push import PushOptions
    from cas.store import Store

    options.one_stdin(file, password_stdin, src_password_stdin)
    todo = sets.pairs(source, dest, imagesets.read(file) if file is not None else None, "copy", cached=False)
    src_login, dest_login = logins(username, password_stdin, src_username, src_password_stdin)
    pulling = options.pull_options(
        platform,
        all_platforms=all_platforms,
        jobs=jobs,
        connections=connections,
        insecure=insecure,
        username=None,
        password_stdin=False,
        lock_timeout=lock_timeout,
        quiet=quiet,
        as_json=as_json,
        hosts_dirs=hosts_dir,
        timeout=timeout,
    )
    pulling = dataclasses.replace(pulling, credentials=src_login)
    pushing = PushOptions(
        jobs=pulling.jobs,
        insecure=insecure,
        credentials=dest_login,
        observer=pulling.observer,
        lock_timeout=lock_timeout,
    )
    store = Store()
    with pulling.observer:
        sets.run_each(
            todo,
            lambda src, dst: run_copy(store, src, dst, pulling, pushing),
            summary,
            command="copy",
            quiet=quiet,
            as_json=as_json,
            body=ctx.meta.setdefault(output.PARTIAL, {}),
            finish=lambda done: budget.json_field(
                budget.keep(
                    store,
                    (max_size, max_age),
                    budget.pulled(result.pulled for result in done),
                    lock_timeout,
                    say=not (as_json or quiet),
                )
            ),
        )


def logins(username: str | None, password_stdin: bool, src_username: str | None, src_password_stdin: bool) -> tuple:
    """(SRC's, DEST's) explicit logins; stdin holds one password, so at most one of them reads it."""
    from cas.errors import UsageError

    if password_stdin and src_password_stdin:
        raise UsageError(
            "--password-stdin and --src-password-stdin would both read stdin",
            hint="give one of them; save the other registry's login with `cas login HOST` first",
        )
    src = options.read_credentials(
        src_username,
        src_password_stdin,
        ("--src-username", "--src-password-stdin"),
        'echo "$TOKEN" | cas copy --src-username USER --src-password-stdin SRC DEST',
    )
    dest = options.read_credentials(
        username, password_stdin, example='echo "$TOKEN" | cas copy -u USER --password-stdin SRC DEST'
    )
    return src, dest


def summary(result) -> str:
    pulled, pushed, size = result.pulled, result.pushed, output.human_size
    return (
        f"copied {result.source} to {result.destination}: {output.short_digest(str(pushed.plan.top.digest))}  "
        f"downloaded {pulled.downloaded_blobs} blob(s), {size(pulled.downloaded_bytes)}; "
        f"uploaded {pushed.uploaded_blobs}, {size(pushed.uploaded_bytes)}; "
        f"mounted {pushed.mounted_blobs}; skipped {pushed.skipped_blobs} ({result.seconds:.2f}s)"
    )
