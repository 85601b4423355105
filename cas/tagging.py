"""`cas tag SRC NEW`: a second name for a cached image, written as records only (no blob moves).

Each cached platform of SRC gets a record under NEW with the same digests, so export writes NEW
into ``manifest.json`` / ``index.json``, push pushes it, and ``rm NEW`` forgets only NEW. NEW is
replaced whole, as ``docker tag`` moves a tag: its platforms cached before are forgotten.
"""

from __future__ import annotations

from cas.errors import NotCached, UsageError
from cas.records import RefRecord
from cas.reference import Reference
from cas.store import Store


def tag(store: Store, source: Reference, new: Reference) -> list[RefRecord]:
    """Write NEW's records from SOURCE's; the records written, one per platform."""
    if new.digest is not None:
        raise UsageError(f"{new} names a digest: a new name needs a tag", hint=f"e.g. cas tag {source} {new.name}:1.0")
    metadata = store.metadata
    with metadata.transact():
        records = _records_of(store, source)
        for old in metadata.ref_records(str(new)):
            metadata.remove_ref(old)
        written = [r.replace(ref=str(new), registry=new.registry) for r in records]
        for record in written:
            metadata.put_ref(record)
    store.write_layout_index()
    return written


def _records_of(store: Store, source: Reference) -> list[RefRecord]:
    """SOURCE's records; for NAME@DIGEST also those of any cached name of that image."""
    records = store.metadata.ref_records(str(source))
    if not records and source.digest is not None:
        found = {
            r.platform: r for r in store.metadata.refs() if r.digest == source.digest or r.manifest == source.digest
        }
        records = list(found.values())
    if not records:
        raise NotCached.references([str(source)], hint=f"run `cas pull {source}` first")
    return records
