"""cas pull REF...: fetch what the store lacks, then one summary line per image."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def pull(
    refs: Annotated[list[str], typer.Argument(help="Image references: alpine, host:5000/app:1.0, name@sha256:...")],
    platform: options.PlatformOpt = None,
    jobs: options.Jobs = 4,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    lock_timeout: options.LockTimeout = 600.0,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Pull images into the store, downloading only the blobs it does not hold yet."""
    from cas import reference
    from cas.manifest import Platform
    from cas.pull import PullOptions
    from cas.pull import pull as run_pull
    from cas.store import Store
    from cli.progress import BarsObserver, QuietObserver

    parsed = [reference.parse(text) for text in refs]  # every reference is checked before any network call
    wanted = Platform.parse(platform) if platform else None
    credentials = options.read_credentials(username, password_stdin)
    observer = BarsObserver() if output.want_progress(quiet, as_json) else QuietObserver()
    store = Store()
    results = []
    with observer:
        for ref in parsed:
            opts = PullOptions(wanted, jobs, insecure, credentials, observer, lock_timeout)
            result = run_pull(store, ref, opts)
            results.append(result)
            if not (as_json or quiet):
                output.notice(summary(result))
    if as_json:
        output.emit_json([r.to_json() for r in results])


def summary(result) -> str:
    size = output.human_size
    return (
        f"{result.ref}: {result.record['manifest'][:19]} {result.record['platform'] or ''}  "
        f"downloaded {result.downloaded_blobs} blob(s), {size(result.downloaded_bytes)}; "
        f"reused {result.reused_blobs}, {size(result.reused_bytes)} saved ({result.seconds:.2f}s)"
    )
