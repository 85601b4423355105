"""`cas pull -f FILE`: every image of a set, several at once, in one process.

A warm re-pull of a build machine's images is mostly tag resolution (one manifest request per
image, no blob moves), so a set's images are pulled several at a time, each as ``cas pull REF`` would.
A pinned line (a lock file's ``NAME:TAG@DIGEST``) pulls exactly that digest, records it under
NAME:TAG, and then asks the registry what the tag names today, to report a tag that moved.
A line that fails is reported as a failing reference of ``cas pull A B C`` is; the others go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cas.digest import Digest
from cas.errors import PER_REFERENCE, CasError
from cas.imagesets import Entry
from cas.pull import PullOptions, PullResult, pull
from cas.store import Store


@dataclass
class Outcome:
    entry: Entry
    result: PullResult | None = None
    error: CasError | None = None
    moved_to: Digest | None = None  # a pinned tag that now names another digest
    unchecked: str | None = None  # why a pinned tag could not be checked (the pull itself went fine)

    @property
    def platforms(self) -> list[str | None]:
        return [r.platform for r in self.result.records] if self.result else []


def pull_set(
    store: Store,
    entries: list[Entry],
    options: PullOptions,
    *,
    at_once: int = 1,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Pull every entry, ``at_once`` images at a time; outcomes in the entries' order.

    ``on_done`` hears each outcome as it ends. Errors that are not one image's (a usage error,
    the store) stop the set and are raised.
    """

    def run(entry: Entry) -> Outcome:
        outcome = _pull_one(store, entry, options)
        if on_done is not None:
            on_done(outcome)
        return outcome

    from cas.registry.shared import KeyedPool

    with KeyedPool() as shared:  # one connection per registry for the set, not one per image
        options = dataclasses.replace(options, shared=shared)
        if len(entries) == 1 or at_once == 1:
            return [run(entry) for entry in entries]
        with ThreadPoolExecutor(min(at_once, len(entries)), thread_name_prefix="cas-set") as pool:
            futures = [pool.submit(run, entry) for entry in entries]
            return [future.result() for future in futures]


def _pull_one(store: Store, entry: Entry, options: PullOptions) -> Outcome:
    if entry.platforms:
        options = dataclasses.replace(options, platforms=entry.platforms, all_platforms=False)
    outcome = Outcome(entry)
    try:
        outcome.result = pull(store, entry.fetch, options)
    except PER_REFERENCE as exc:
        outcome.error = exc
        return outcome
    if entry.pinned:
        from cas.tagging import tag

        tag(store, entry.fetch, entry.name)
        _check_tag(outcome, options)
    return outcome


def _check_tag(outcome: Outcome, options: PullOptions) -> None:
    """What the pinned tag names today (one manifest request): a tag that moved is said, not followed."""
    from cas import remote

    wanted = remote.RemoteOptions(options.insecure, options.credentials, options.sources, options.timeout)
    try:
        current = remote.resolve(outcome.entry.name, wanted)
    except CasError as exc:
        outcome.unchecked = exc.message
        return
    if current != outcome.entry.pinned:
        outcome.moved_to = current
