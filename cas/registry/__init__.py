"""Talking to registries: HTTP (httpx), auth, credentials, retries and Range resume.

Never writes to the store. The public names are re-exported lazily so that
``import cas.registry.credentials`` (or this package) does not import httpx.

    RegistryClient(host, ...)         .get_manifest(repo, tag_or_digest) -> FetchedManifest
                                      .download_blob(repo, digest, sink, on_bytes)
    Credentials, lookup_credentials   docker config.json, credential helpers, podman auth.json
    TokenCache, Sink                  the protocols the index and the store implement
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cas.registry.auth import TokenCache, parse_www_authenticate
    from cas.registry.client import FetchedManifest, RegistryClient
    from cas.registry.credentials import Credentials, lookup_credentials
    from cas.registry.download import Sink

_EXPORTS = {
    "Credentials": "cas.registry.credentials",
    "lookup_credentials": "cas.registry.credentials",
    "TokenCache": "cas.registry.auth",
    "parse_www_authenticate": "cas.registry.auth",
    "FetchedManifest": "cas.registry.client",
    "RegistryClient": "cas.registry.client",
    "Sink": "cas.registry.download",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cas.registry' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
