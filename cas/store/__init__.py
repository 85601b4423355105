"""The store on disk: blobs, the metadata index, the store lock and the OCI layout files.

``Store`` only joins the pieces that live under one ``CAS_HOME``; it knows
nothing about HTTP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cas import DEFAULT_LOCK_TIMEOUT
from cas.errors import ManifestError
from cas.manifest import Descriptor, Platform, layout_index
from cas.store.ballast import Ballast
from cas.store.blobs import BlobStore
from cas.store.fs import atomic_write, storage_errors
from cas.store.ingest import IngestEntry, Ingests
from cas.store.locks import FileLock
from cas.store.writer import BlobInfo, Ingest

if TYPE_CHECKING:
    from cas.metadata import Metadata
    from cas.records import RefRecord

LAYOUT_VERSION = "v1"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"

__all__ = ["BlobInfo", "BlobStore", "Ingest", "IngestEntry", "Ingests", "Store", "default_home"]


def default_home() -> Path:
    home = os.environ.get("CAS_HOME")
    if home:
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cas"


def layout_refs(home: Path | None = None) -> list[str]:
    """The references index.json lists, read without opening the index (shell completion must be instant).

    index.json is rewritten after every change to the refs, so this is what `cas images` lists;
    a store that does not exist or cannot be read lists nothing.
    """
    path = (home if home is not None else default_home()) / LAYOUT_VERSION / "index.json"
    try:
        entries = json.loads(path.read_bytes())["manifests"]
        names = {entry["annotations"][REF_NAME] for entry in entries}
    except (OSError, ValueError, TypeError, KeyError):
        return []
    return sorted(name for name in names if isinstance(name, str))


class Store:
    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / LAYOUT_VERSION
        with storage_errors(f"the store at {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                atomic_write(self.root / "oci-layout", OCI_LAYOUT)
                atomic_write(self.root / "index.json", layout_index([]))
        self.blobs = BlobStore(self.root)
        self.ingests = Ingests(self.root, self.blobs)
        self.ballast = Ballast(self.root)
        self._metadata: Metadata | None = None

    @property
    def metadata(self) -> Metadata:
        if self._metadata is None:
            from cas.metadata import Metadata  # diskcache costs ~40 ms to import; only pay when used

            self._metadata = Metadata(self.root / "index")
        return self._metadata

    def lock(
        self,
        *,
        shared: bool,
        timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        on_wait: Callable[[str], None] | None = None,
    ) -> FileLock:
        return FileLock(self.root / "lock", shared=shared, timeout=timeout, purpose="the cas store", on_wait=on_wait)

    def layout_lists(self, record: RefRecord) -> bool:
        """Whether index.json already names this ref record's manifest (a crash may have left it stale)."""
        try:
            entries = json.loads((self.root / "index.json").read_bytes())["manifests"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return any(
            isinstance(e, dict)
            and e.get("digest") == str(record.listed)
            and (e.get("annotations") or {}).get(REF_NAME) == record.ref
            for e in entries
        )

    def write_layout_index(self) -> None:
        """Regenerate index.json from the refs so the store stays a valid OCI image layout.

        Serialized by its own lock so that the last writer has read the latest refs:
        without it, two processes could rename their copies in the wrong order.
        """
        with FileLock(self.root / "index.json.lock", purpose="the store's index.json"):
            self._write_layout_index()

    def _write_layout_index(self) -> None:
        entries = []
        for record in sorted(self.metadata.refs(malformed=[]), key=lambda r: (r.ref, r.platform or "")):
            manifest = record.entry(record.listed)
            if manifest is None:
                continue
            platform = _platform(record.platform)
            entries.append(
                Descriptor(
                    manifest.media_type, manifest.digest, manifest.size, platform, {REF_NAME: record.ref}
                ).to_json()
            )
        atomic_write(self.root / "index.json", layout_index(entries))

    def close(self) -> None:
        if self._metadata is not None:
            self._metadata.close()
            self._metadata = None


def _platform(text: str | None) -> Platform | None:
    """A record's platform for its index.json entry (several platforms of one ref share its name)."""
    try:
        return Platform.parse(text) if text else None
    except ManifestError:
        return None
