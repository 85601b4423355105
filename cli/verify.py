"""cas verify: check every blob against the index; --repair mends what it finds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import options, output

if TYPE_CHECKING:
    from cas.verify import Report


def verify(
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Re-hash every blob with its digest's own algorithm (slower), not only blake3."),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Delete bad blobs, orphans and stale downloads (resumable ones stay); mark affected images for a re-pull.",
        ),
    ] = False,
    lock_timeout: options.LockTimeout = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Check blob sizes and fingerprints; report corrupt, missing and orphan blobs and stale downloads (exit 1 if any).

    With --quiet only the exit status says whether the store is sound.

    \b
    Examples:
      cas verify
      cas verify --deep --repair
    """
    from cas.store import Store
    from cas.verify import verify as run_verify

    report = run_verify(Store(), deep=deep, repair=repair, lock_timeout=lock_timeout, on_wait=output.notice)
    if as_json:
        output.emit_json("verify", report.to_json())
    elif not quiet:
        render(report)
    for message in report.errors:
        output.error(message)
    if not report.ok:
        raise typer.Exit(1)


def render(report: Report) -> None:
    mode = "size, blake3 and digest" if report.deep else "size and blake3"
    print(f"checked {report.checked_blobs} blob(s), {output.human_size(report.checked_bytes)} ({mode})")
    for f in report.findings:
        line = f"{f.kind}: {f.what}: {f.detail}"
        if f.refs:
            line += f" (needed by {', '.join(f.refs)})"
        print(line)
        if f.repaired:
            print(f"  repaired: {f.repaired}")
    for entry in report.resumable:
        when = output.ago(report.now - entry["age_seconds"], report.now)
        print(
            f"resumable: {entry['digest']}: {output.human_size(entry['partial_bytes'])} downloaded, last written {when};"
            " the next `cas pull` resumes it (kept)"
        )
    if report.needs_pull:
        print("pull again to restore: cas pull " + " ".join(report.needs_pull))
    if report.ok:
        print("ok: no problems found")
    elif not report.repair:
        output.notice(f"{len(report.findings)} problem(s) found; run `cas verify --repair` to fix them")
