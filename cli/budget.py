"""After a command that adds blobs: keep the size budget (cas.budget), then say what went and why."""

from __future__ import annotations

from collections.abc import Iterable

from cli import output


def keep(
    store,
    limits: tuple[int | None, float | None],
    spare: Iterable[tuple[str, str | None]],
    lock_timeout: float | None,
    *,
    say: bool,
):
    """Evict to the budget (``limits``: --max-size and --max-age, each else its variable or the config
    file); what happened (a cas.budget.Eviction), None when no budget is set or nothing needed doing.
    ``say``: print it now (else the caller tells it, when its own summary is out)."""
    from cas.budget import Budget
    from cas.budget import keep as run_keep

    eviction = run_keep(store, Budget.resolve(*limits), spare, lock_timeout=lock_timeout)
    if say:
        tell(eviction)
    return eviction


def pulled(results) -> list[tuple[str, str | None]]:
    """(ref, platform) of every record cas.pull results wrote: what the budget must not evict."""
    return [(record.ref, record.platform) for result in results for record in result.records]


def json_field(eviction) -> dict:
    """``"budget"`` in a command's JSON when the budget did something or left the store over it; else nothing."""
    return {"budget": eviction.to_json()} if eviction is not None else {}


def tell(eviction) -> None:
    """What the eviction did, or why the store is still over its budget, on stderr."""
    for line in eviction.lines() if eviction is not None else ():
        output.notice(line)
