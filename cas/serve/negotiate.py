"""Accept negotiation for manifests, as the distribution registry does it. Pure.

A client names the manifest types it reads in ``Accept``. What it gets:
- the stored manifest when its type is accepted (``*/*`` accepts anything);
- asked by tag for an index or manifest list it does not accept: the child for its
  platform (``CHILD``), whose own type must then be accepted;
- a Docker schema 2 manifest asked for by digest: the stored bytes (a digest names exact bytes);
- otherwise 404 ``MANIFEST_UNKNOWN`` saying which type was found and not accepted (distribution
  would convert to schema 1; cas never rewrites a manifest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, OCI_INDEX, OCI_MANIFEST, Platform
from cas.serve.errcode import ServeError

SERVE = "serve"
CHILD = "child"
ANY = "*/*"

_NAMES = {
    OCI_INDEX: "OCI index",
    DOCKER_LIST: "Docker manifest list",
    OCI_MANIFEST: "OCI manifest",
    DOCKER_MANIFEST: "Docker schema 2 manifest",
}
_UA_PART = re.compile(r"\b(os|arch)/([A-Za-z0-9_.-]+)")


def accepted(headers: Iterable[str]) -> frozenset[str]:
    """The media types named by every ``Accept`` header (several headers, comma lists, ``;q=`` dropped)."""
    types = set()
    for header in headers:
        for item in header.split(","):
            media = item.split(";", 1)[0].strip().lower()
            if media:
                types.add(media)
    return frozenset(types)


def decide(media_type: str, accept: frozenset[str], *, by_tag: bool) -> str:
    """SERVE or CHILD for a stored manifest of ``media_type``; ServeError MANIFEST_UNKNOWN when neither."""
    if ANY in accept or media_type in accept:
        return SERVE
    if media_type in INDEX_TYPES and by_tag:
        return CHILD
    if media_type == DOCKER_MANIFEST and not by_tag:
        return SERVE
    what = _NAMES.get(media_type, media_type)
    raise ServeError(
        "MANIFEST_UNKNOWN",
        f"{what} found, but the Accept header does not include {media_type}",
        {"mediaType": media_type, "accepted": sorted(accept)},
    )


def client_platform(user_agent: str | None) -> Platform:
    """The platform a client names in its User-Agent (docker sends ``os/linux arch/amd64``); linux/amd64 otherwise,
    which is the distribution registry's choice for a client that does not read manifest lists."""
    found = dict(_UA_PART.findall(user_agent or ""))
    return Platform(found.get("os", "linux"), found.get("arch", "amd64"))
