"""What push and copy share for `-f FILE PREFIX`: the (source, destination) pairs and the run over them.

A failing image is said and the others go on, as `cas pull A B C` does; a lone pair's error is the
command's own.
"""

from __future__ import annotations

from collections.abc import Callable

from cli import output


def pairs(first: str | None, second: str | None, entries: list | None, command: str, *, cached: bool) -> list[tuple]:
    """(SRC, DEST, FILE:LINE): the two arguments, or each of ``entries`` (read from -f FILE) sent under
    the prefix given.

    ``cached``: SRC is what the store calls the image (push); else what a pull fetches (copy).
    """
    from cas import imagesets, reference
    from cas.errors import UsageError

    if entries is not None:
        if second is not None or first is None:
            raise UsageError(
                "with -f FILE, give only the destination prefix", hint=f"cas {command} -f images.txt HOST[/PATH]"
            )
        prefix = imagesets.prefix_of(first)
        return [(e.name if cached else e.fetch, imagesets.destination(e, prefix), e.where) for e in entries]
    if first is None or second is None:
        missing = ("REF" if cached else "SRC") if first is None else "DEST"
        raise UsageError(f"missing argument {missing}", hint=f"see `cas {command} --help`")
    return [(reference.parse(first), reference.parse(second), "")]


def run_each(
    todo: list[tuple],
    action: Callable[[object, object], object],
    summary: Callable[[object], str],
    *,
    command: str,
    quiet: bool,
    as_json: bool,
    body: dict,
    finish: Callable[[list], dict] | None = None,
) -> None:
    """``action(src, dest)`` for each pair; a summary line each (unless quiet), one JSON object at the end:
    ``body``, which cli.main prints with the error when the command fails. ``finish`` runs once on the
    results that succeeded (the size budget after a copy), its fields added to ``body``."""
    from cas.errors import PER_REFERENCE, SomeFailed

    done, failed = [], []
    one = len(todo) == 1 and not todo[0][2]  # SRC DEST on the command line, not a set from -f
    for src, dst, where in todo:
        try:
            result = action(src, dst)
        except PER_REFERENCE as exc:
            if one:
                raise
            output.error(f"{where}: {exc.message}" if where else exc.message, exc.hint)
            failed.append((src, where, exc))
            continue
        done.append(result)
        if not (as_json or quiet):
            output.notice(summary(result))
    if one:
        body.update(done[0].to_json())
    else:
        body["images"] = [r.to_json() for r in done]
        body["failed"] = [failed_row(ref, where, exc) for ref, where, exc in failed]
    if finish is not None and done:
        body.update(finish(done))
    if failed:
        raise SomeFailed(
            f"{len(failed)} of {len(todo)} images failed to {command}: {', '.join(str(ref) for ref, _, _ in failed)}",
            hint="see the error for each above" + (f"; the others were {_DONE[command]}" if done else ""),
            errors=[exc for _, _, exc in failed],
        )
    if as_json:
        output.emit_json(command, body)


def failed_row(ref: object, where: str, exc) -> dict:
    """One image that failed, in a command's --json ``failed`` list: `-f` FILE:LINE in ``where``."""
    return {"ref": str(ref), "where": where or None, "error": exc.message, "hint": exc.hint}


_DONE = {"copy": "copied", "push": "pushed"}
