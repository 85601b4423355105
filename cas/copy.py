"""`cas copy SRC DEST`: registry to registry through the store, as `crane copy` / `skopeo copy` do.

A pull of SRC (only the blobs the store lacks cross the network) joined to a push to DEST (one
HEAD per blob; only what DEST lacks moves, mounted from another repository of DEST's registry
where the store knows one holds it). The digest DEST ends up with is SRC's: manifests go out
byte for byte. A multi-platform SRC is copied whole (``--all-platforms``: its index) or as the
one platform pulled (that platform's manifest, as skopeo copies without ``--all``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from cas.errors import UsageError
from cas.manifest import Platform
from cas.pull import PullOptions, PullResult, pull
from cas.push import PushOptions, PushResult, push
from cas.reference import Reference
from cas.store import Store


@dataclass
class CopyResult:
    source: str
    destination: str
    pulled: PullResult
    pushed: PushResult
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "ref": self.source,
            "destination": self.destination,
            "digest": str(self.pushed.plan.top.digest),
            "platforms": self.pushed.plan.platforms,
            "pull": self.pulled.to_json(),
            "push": self.pushed.to_json(),
            "seconds": round(self.seconds, 3),
        }


def copy(store: Store, source: Reference, dest: Reference, pulling: PullOptions, pushing: PushOptions) -> CopyResult:
    started = time.monotonic()
    if len(pulling.platforms) > 1:
        raise UsageError(
            "cas copy takes one platform of an index, or all of them",
            hint="give one --platform, or --all-platforms to copy the index whole",
        )
    if pulling.credentials is None and source.api_host == dest.api_host:
        pulling = dataclasses.replace(pulling, credentials=pushing.credentials)  # -u names the one registry
    pulled = pull(store, source, pulling)
    first = pulled.records[0]
    if first.digest != first.manifest and not pulling.all_platforms:  # one platform of an index: its manifest
        pushing = dataclasses.replace(pushing, platform=Platform.parse(first.platform) if first.platform else None)
    pushed = push(store, source, dest, pushing)
    return CopyResult(str(source), str(dest), pulled, pushed, time.monotonic() - started)
