"""Docker-style image references, parsed and normalized. Pure: no I/O.

``alpine`` is ``docker.io/library/alpine:latest``; ``docker.io`` is served at
``registry-1.docker.io``. The grammar follows distribution's reference package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cas.digest import Digest
from cas.errors import BadDigest, BadReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# Every host name that means Docker Hub (docker login, old configs, the API host, the web host).
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API, "registry.hub.docker.com"})
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_MAX_NAME = 255
FORM_HINT = "a reference is [HOST[:PORT]/]NAME[:TAG][@DIGEST], e.g. alpine:3.20 or 127.0.0.1:5000/team/app:1.0"


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the Distribution API for this registry."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The short form docker shows: ``alpine:latest``, ``myreg:5000/app:1``."""
        name = self.name
        if self.registry == DOCKER_HUB:
            name = self.repository.removeprefix("library/")
        if self.tag is not None:
            return f"{name}:{self.tag}"
        return f"{name}@{self.digest}"


def parse(text: str) -> Reference:
    """Parse a reference, or raise BadReference saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise BadReference("empty image reference", hint="e.g. alpine, alpine:3.19, host:5000/app@sha256:...")
    if any(ch.isspace() for ch in text):
        raise BadReference(f"invalid reference {text!r}: contains whitespace", hint=FORM_HINT)

    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest_text = remainder.rpartition("@")
        try:
            digest = Digest.parse(digest_text)
        except BadDigest as exc:
            raise BadReference(f"invalid reference {text!r}: {exc.message}", hint=exc.hint) from exc

    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise BadReference(
                f"invalid reference {text!r}: bad tag {tag!r}",
                hint="a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            )

    registry, repository = _split_registry(remainder, text)
    _check_repository(repository, text, remainder)
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise BadReference(
            f"invalid reference {text[:80]!r}...: name longer than {_MAX_NAME} characters",
            hint="registry and repository together are at most 255 characters",
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)


def _split_registry(name: str, text: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    is_domain = sep and ("." in first or ":" in first or first == "localhost" or first != first.lower())
    if not is_domain:
        registry, repository = DOCKER_HUB, name
    else:
        if not _DOMAIN.fullmatch(first):
            raise BadReference(f"invalid reference {text!r}: bad registry host {first!r}", hint=FORM_HINT)
        registry, repository = first, rest
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _check_repository(repository: str, text: str, name: str) -> None:
    """``name`` is the text before the tag and digest: lowered, it is the reference the user most likely meant."""
    if not repository:
        raise BadReference(f"invalid reference {text!r}: missing repository name", hint=FORM_HINT)
    for component in repository.split("/"):
        if _COMPONENT.fullmatch(component):
            continue
        if component.lower() != component and _COMPONENT.fullmatch(component.lower()):
            raise BadReference(
                f"invalid reference {text!r}: repository name must be lowercase",
                hint=f"write the name in lowercase (tags may keep capitals): {name.lower()}{text[len(name) :]}",
            )
        raise BadReference(
            f"invalid reference {text!r}: bad repository component {component!r}",
            hint="components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
        )
