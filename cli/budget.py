"""After a command that adds blobs: keep the size budget (cas.budget), then say what went and why."""

from __future__ import annotations

from collections.abc import Iterable

from cli import output


def keep(
    store, max_size: int | None, spare: Iterable[tuple[str, str | None]], lock_timeout: float | None, *, say: bool
):
    """Evict to the budget (``max_size``: --max-size, else $CAS_MAX_SIZE or the config file); what
    happened (a cas.budget.Eviction), None when no budget is set or nothing needed doing. ``say``:
    print it now (else the caller tells it, when its own summary is out)."""
    from cas.budget import Budget
    from cas.budget import keep as run_keep
    from cas.settings import current

    settings = current()
    size = settings.resolve("max-size", max_size)
    origin = {"flag": "--max-size", "env": f"${size.source}", "file": size.source}.get(size.origin, "")
    budget = Budget(size.value, settings.value("max-age"), origin)
    eviction = run_keep(store, budget, spare, lock_timeout=lock_timeout)
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
    for line in lines(eviction) if eviction is not None else ():
        output.notice(line)


def lines(eviction) -> list[str]:
    size = output.human_size
    budget = eviction.budget
    limit = f"{size(budget.max_size)} (max-size from {budget.origin})" if budget.max_size is not None else ""
    said = []
    if eviction.images:
        why = f"to stay under {limit}" if budget.max_size is not None else ""
        if budget.max_age is not None:
            why += f"{' and ' if why else ''}as unused for longer than max-age {budget.max_age:g}s"
        count = len(eviction.images)
        names = ", ".join(image.ref for image, _ in eviction.images)
        said.append(f"evicted {count} image{'s' if count != 1 else ''} ({names}), {size(eviction.freed_bytes)}, {why}")
    for image in eviction.too_big:
        said.append(
            f"warning: {image.ref} ({image.platform or 'unknown platform'}) alone is {size(image.size)}, "
            f"more than the budget of {limit}: it is kept"
        )
    if eviction.over and not eviction.too_big:
        why = eviction.skipped or "what this command used, and what running commands hold, is kept"
        said.append(f"warning: the store holds {size(eviction.store_bytes)}, over its budget of {limit}: {why}")
    return said
