"""What `cas pull` says after its images: failures (one line each), the lock file, --json."""

from __future__ import annotations

from collections.abc import Callable

from cli import output
from cli.sets import failed_row


def tell(summary: Callable[[object], str], *, single: bool, quiet: bool) -> Callable[[object], None]:
    """Each image's line as it ends: its summary (unless quiet), or its error (always; a lone
    reference's error is raised instead, as the command's own)."""

    def said(outcome) -> None:
        if outcome.error is not None and not single:
            where = f"{outcome.entry.where}: " if outcome.entry.where else ""
            output.error(where + outcome.error.message, outcome.error.hint)
        elif outcome.result is not None and not quiet:
            output.notice(summary(outcome.result) + _moved(outcome))

    return said


def _moved(outcome) -> str:
    """A pinned tag that moved is named, with what it names now; it is not followed."""
    entry = outcome.entry
    if outcome.moved_to is not None:
        return f"\n  tag moved: {entry.name} now names {outcome.moved_to}; kept {entry.pinned} as locked"
    if outcome.unchecked:
        return f"\n  could not check whether {entry.name} moved: {outcome.unchecked}"
    return ""


def report(body: dict, outcomes: list, *, lock: str | None, source: str, as_json: bool) -> None:
    """The --json body (printed on failure too, by cli.main), the lock file only when every image was
    pulled, and the failure of the whole command when some image failed."""
    from cas import imagesets
    from cas.errors import SomeFailed

    failed = [o for o in outcomes if o.error is not None]
    body["images"] = [o.result.to_json() for o in outcomes if o.result]
    body["failed"] = [failed_row(o.entry.ref, o.entry.where, o.error) for o in failed]
    body["moved"] = [
        {"ref": str(o.entry.name), "locked": str(o.entry.pinned), "current": str(o.moved_to)}
        for o in outcomes
        if o.moved_to is not None
    ]
    if lock and not failed:
        lines = [imagesets.lock_line(o.entry, o.result.records[0].digest, o.platforms) for o in outcomes]
        imagesets.write_lock(lock, lines, source)
    body["lock"] = lock if lock and not failed else None
    if len(outcomes) == 1 and failed and not outcomes[0].entry.where:
        raise failed[0].error  # a lone reference's error is the command's own
    if failed:
        names = ", ".join(str(o.entry.ref) for o in failed)
        others = "the others were pulled" if len(failed) < len(outcomes) else "none was pulled"
        raise SomeFailed(
            f"{len(failed)} of {len(outcomes)} references failed to pull: {names}",
            hint=f"see the error for each above; {others}" + ("; the lock file was not written" if lock else ""),
            errors=[o.error for o in failed],
        )
    if as_json:
        output.emit_json("pull", body)
