"""cas pull REF...: fetch what the store lacks, then one summary line per image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import budget, options, output

if TYPE_CHECKING:
    from cas.pull import PullResult


LockFile = Annotated[
    str | None,
    typer.Option(
        "--lock",
        metavar="LOCKFILE",
        help="Write LOCKFILE: each image pinned to the digest it resolved to, with the platforms taken "
        "(pull -f LOCKFILE later fetches exactly those).",
    ),
]


def pull(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(metavar="REF...", help="Image references: alpine, host:5000/app:1.0, name@sha256:..."),
    ] = None,
    file: options.ImageSetFile = None,
    lock: LockFile = None,
    platform: options.PlatformsOpt = None,
    all_platforms: Annotated[
        bool, typer.Option("--all-platforms", help="Every platform of a multi-platform image (one record each).")
    ] = False,
    jobs: options.Jobs = None,
    connections: options.Connections = None,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    lock_timeout: options.LockTimeout = None,
    hosts_dir: options.HostsDir = None,
    timeout: options.Timeout = None,
    max_size: options.MaxSize = None,
    max_age: options.MaxAge = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """Pull images into the store, downloading only the blobs it does not hold yet.

    \b
    Examples:
      cas pull alpine:3.20 127.0.0.1:5000/team/app:1.4
      cas pull --platform linux/arm64 ghcr.io/org/tool:2
      echo "$TOKEN" | cas pull -u ci --password-stdin registry.example/app:1
      cas pull -f images.txt --lock images.lock
    """
    from cas import imagesets
    from cas.pullset import pull_set
    from cas.store import Store
    from cli.pull_set import report, tell

    body = ctx.meta.setdefault(output.PARTIAL, {"images": [], "failed": []})  # the --json object, on failure too
    options.one_stdin(file, password_stdin)
    entries = imagesets.entries(refs, file)  # every reference is checked before any network call
    opts = options.pull_options(
        platform,
        all_platforms=all_platforms,
        jobs=jobs,
        connections=connections,
        insecure=insecure,
        username=username,
        password_stdin=password_stdin,
        lock_timeout=lock_timeout,
        quiet=quiet or bool(file),  # a set's images are pulled several at once: summaries, no bars
        as_json=as_json,
        hosts_dirs=hosts_dir,
        timeout=timeout,
    )
    store = Store()
    single = not file and len(entries) == 1
    with opts.observer:
        outcomes = pull_set(
            store,
            entries,
            opts,
            at_once=opts.jobs if file else 1,
            on_done=tell(summary, single=single, quiet=quiet or as_json),
        )
    if not (single and outcomes[0].error):
        pulled = budget.pulled([o.result for o in outcomes if o.result])
        body.update(
            budget.json_field(budget.keep(store, (max_size, max_age), pulled, lock_timeout, say=not (as_json or quiet)))
        )
    report(body, outcomes, lock=lock, source=file or "the command line", as_json=as_json)


def summary(result: PullResult) -> str:
    """One line per reference: its digest (the index's, for a multi-platform tag), every platform pulled, counts."""
    size = output.human_size
    platforms = ", ".join(r.platform for r in result.records if r.platform)
    line = (
        f"{result.ref}: {output.short_digest(str(result.records[0].digest))}{' ' + platforms if platforms else ''}  "
        f"downloaded {result.downloaded_blobs} blob(s), {size(result.downloaded_bytes)}; "
        f"reused {result.reused_blobs}, {size(result.reused_bytes)} saved ({result.seconds:.2f}s)"
    )
    if result.retries or result.discarded_bytes:  # counted apart: neither is in the downloaded bytes
        retries = f"{result.retries} {'retry' if result.retries == 1 else 'retries'}"
        line += f"; {retries}, {size(result.discarded_bytes)} discarded"
    if result.mirrored:
        line += "\n" + endpoints_line(result)
    return line


def endpoints_line(result: PullResult) -> str:
    """Where the image came from when mirrors are configured: the manifest's endpoint, bytes per
    endpoint, then each endpoint that was fallen back from, once, with its first reason."""
    served = ", ".join(f"{url} {output.human_size(n)}" for url, n in result.endpoint_bytes.items()) or "nothing"
    lines = [f"  manifest from {result.manifest_endpoint or 'the store'}; bytes from {served}"]
    seen: dict[str, list] = {}
    for fallback in result.fallbacks:
        seen.setdefault(fallback.endpoint, []).append(fallback)
    for endpoint, fallbacks in seen.items():
        first = fallbacks[0]
        more = f" (and {len(fallbacks) - 1} more)" if len(fallbacks) > 1 else ""
        lines.append(f"  fell back from {endpoint} for {first.what}{more}: {first.reason}")
    return "\n".join(lines)
