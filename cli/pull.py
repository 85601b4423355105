"""cas pull REF...: fetch what the store lacks, then one summary line per image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import budget, options, output

if TYPE_CHECKING:
    from cas.pull import PullResult


def pull(
    ctx: typer.Context,
    refs: Annotated[
        list[str], typer.Argument(metavar="REF...", help="Image references: alpine, host:5000/app:1.0, name@sha256:...")
    ],
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
    """
    from cas import reference
    from cas.errors import PER_REFERENCE, SomeFailed
    from cas.pull import pull as run_pull
    from cas.store import Store

    body = ctx.meta.setdefault(output.PARTIAL, {"images": [], "failed": []})  # the --json object, on failure too
    parsed = [reference.parse(text) for text in refs]  # every reference is checked before any network call
    opts = options.pull_options(
        platform,
        all_platforms=all_platforms,
        jobs=jobs,
        connections=connections,
        insecure=insecure,
        username=username,
        password_stdin=password_stdin,
        lock_timeout=lock_timeout,
        quiet=quiet,
        as_json=as_json,
        hosts_dirs=hosts_dir,
        timeout=timeout,
    )
    store = Store()
    results, failed = [], []
    with opts.observer:
        for ref in parsed:
            try:
                result = run_pull(store, ref, opts)
            except PER_REFERENCE as exc:  # said now; the other references are still pulled, as podman pull does
                body["failed"].append({"ref": str(ref), "error": exc.message, "hint": exc.hint})
                if len(parsed) == 1:
                    raise
                output.error(exc.message, exc.hint)
                failed.append((ref, exc))
                continue
            results.append(result)
            body["images"].append(result.to_json())
            if not (as_json or quiet):
                output.notice(summary(result))
    eviction = budget.keep(store, (max_size, max_age), budget.pulled(results), lock_timeout, say=not (as_json or quiet))
    body.update(budget.json_field(eviction))
    if failed:
        codes = {exc.exit_code for _, exc in failed}
        raise SomeFailed(
            f"{len(failed)} of {len(parsed)} references failed to pull: {', '.join(str(ref) for ref, _ in failed)}",
            hint="see the error for each above; " + ("the others were pulled" if results else "none was pulled"),
            exit_code=codes.pop() if len(codes) == 1 else 1,
        )
    if as_json:
        output.emit_json("pull", body)


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
