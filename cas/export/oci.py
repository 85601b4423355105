"""OCI image layouts: the oci-archive tar, the oci-dir directory, and the pieces the docker-archive shares.

Our index.json lists exactly the image manifests in the plan, never a pulled
multi-platform index: that index names platforms the store does not hold. A
reference exported with several platforms gets an index made for the archive
(``plan.IndexPlan``), written as a blob beside the others.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from cas.digest import Digest
from cas.export.plan import ExportPlan, IndexPlan, member
from cas.export.tarwriter import TarWriter, UnsafeSource
from cas.manifest import CONTAINERD_NAME, Descriptor, layout_index
from cas.store import OCI_LAYOUT, REF_NAME, Store, trust
from cas.store.fs import Linker


def index_json(plan: ExportPlan, ref_name: Callable[[str], str]) -> bytes:
    """One entry per (image or generated index, name); ``ref_name`` maps a canonical name to its ref.name.

    A reference exported with several platforms is listed once, as its generated index; the
    manifests under it are not listed again unless another reference names one of them alone.
    """
    under_index = {image.manifest.digest for index in plan.indexes for image in index.images}
    listed = [(index.descriptor, index.names) for index in plan.indexes]
    listed += [(i.manifest, i.names) for i in plan.images if i.names or i.manifest.digest not in under_index]
    entries = []
    for descriptor, names in listed:
        if not names:
            entries.append(descriptor.to_json())
        for name in names:
            full = str(name)
            entries.append(replace(descriptor, annotations={CONTAINERD_NAME: full, REF_NAME: ref_name(full)}).to_json())
    return layout_index(entries)


def write_blobs(
    writer: TarWriter,
    store: Store,
    blobs: list[Descriptor],
    on_blob: Callable[[Descriptor], None] | None = None,
    made: Iterable[IndexPlan] = (),
) -> None:
    """``blobs/`` and ``blobs/<alg>/`` directories, every blob streamed from the store, then ``made`` indexes."""
    made = list(made)
    algorithms = _algorithms(store, [*blobs, *(index.descriptor for index in made)])
    writer.add_dir("blobs")
    for algorithm in algorithms:
        writer.add_dir(f"blobs/{algorithm}")
    for blob in blobs:
        hasher = blob.digest.hasher() if writer.verify else None
        writer.add_file(member(blob.digest), store.blobs.path(blob.digest), blob.size, hasher)
        if hasher is not None and hasher.hexdigest() != blob.digest.hex:
            raise ChangedWhileExported(blob.digest, f"content hashes to {blob.digest.algorithm}:{hasher.hexdigest()}")
        if on_blob is not None:
            on_blob(blob)
    for index in made:
        writer.add_bytes(member(index.descriptor.digest), index.data)


def write_archive(
    writer: TarWriter, store: Store, plan: ExportPlan, on_blob: Callable[[Descriptor], None] | None = None
) -> None:
    """An OCI image layout as a tar (skopeo/podman ``oci-archive:``); ref.name is the full name."""
    writer.add_bytes("oci-layout", OCI_LAYOUT)
    write_blobs(writer, store, plan.blobs, on_blob, plan.indexes)
    writer.add_bytes("index.json", index_json(plan, lambda full: full))
    writer.close()


class ChangedWhileExported(Exception):
    """``--verify``: a blob's bytes, as they were written, do not hash to its digest."""

    def __init__(self, digest: Digest, problem: str) -> None:
        super().__init__(f"{digest}: {problem}")
        self.digest = digest
        self.problem = problem


def write_dir(
    target: Path,
    store: Store,
    plan: ExportPlan,
    linker: Linker,
    on_blob: Callable[[Descriptor], None] | None = None,
    *,
    verify: bool = False,
) -> None:
    """An OCI image layout directory in ``target`` (which exists and is empty); blobs hard-linked from the store.

    Every file written here is fsynced (copies by the linker, ``oci-layout``, ``index.json``);
    a hard link needs only its directory fsynced, which ``output.dir_output`` does. A hard
    link changes the store file's ctime: the new stat fingerprints are recorded at the end
    (``trust.note_links``), so the next export does not re-hash them. ``verify`` re-hashes
    each file after it is linked or copied (a link copies nothing: reading it is the one pass).
    """
    for algorithm in _algorithms(store, [*plan.blobs, *(index.descriptor for index in plan.indexes)]):
        (target / "blobs" / algorithm).mkdir(parents=True)
    for blob in plan.blobs:
        src, dst = store.blobs.path(blob.digest), target / member(blob.digest)
        try:
            linker.link(src, dst)  # never through a symlink: it links the symlink itself, or fails to copy it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeSource(f"{src} is a symlink; it was not followed") from exc
            raise
        mode = os.lstat(dst).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafeSource(f"{src} is a symlink; it was not followed")
        if not stat.S_ISREG(mode):
            raise UnsafeSource(f"{src} is not a regular file")
        if verify and (problem := trust.check_file(dst, blob.digest, blob.size, None, deep=True).problem):
            raise ChangedWhileExported(blob.digest, problem)
        if on_blob is not None:
            on_blob(blob)
    for index in plan.indexes:
        _write_synced(target / member(index.descriptor.digest), index.data)
    trust.note_links(store, [blob.digest for blob in plan.blobs])
    _write_synced(target / "oci-layout", OCI_LAYOUT)
    _write_synced(target / "index.json", index_json(plan, lambda full: full))


def _algorithms(store: Store, blobs: Iterable[Descriptor]) -> list[str]:
    """The digest algorithms of ``blobs``; each ``blobs/<alg>`` of the store must be a real directory,
    not a symlink out of the store (the blob files themselves are opened without following one)."""
    algorithms = list(dict.fromkeys(b.digest.algorithm for b in blobs))
    for algorithm in algorithms:
        path = store.blobs.blobs_dir / algorithm
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # then its blobs are missing, which the plan has reported
        if stat.S_ISLNK(mode):
            raise UnsafeSource(f"{path} is a symlink; it was not followed")
        if not stat.S_ISDIR(mode):
            raise UnsafeSource(f"{path} is not a directory")
    return algorithms


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
