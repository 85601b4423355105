"""Prune: mark from refs and live leases, sweep every other blob and stale ingest entry.

The order is diskcache's: change the index first (one ``BEGIN IMMEDIATE``
transaction that re-reads the roots, then forgets the evicted refs and the
swept blob records), delete files second. A crash in between leaves only files
that nothing in the index names; the next prune removes them. The walk of
``blobs/`` and ``ingest/`` happens before that transaction: under the exclusive
store lock no file changes, so index writers (``cas rm``, lease clean-up) are
blocked only while the index itself is re-read and changed.

Roots are the blobs listed by every kept ref record plus every digest held by
a live lease (a running pull or export). The sweep runs under the store lock
held exclusively, so no pull or export (they hold it shared) is mid-way.

Files are removed through directory descriptors opened with ``O_NOFOLLOW``
below ``blobs/``: a symlink is unlinked as a link and never followed, so a
prune cannot delete anything outside the store.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cas import DEFAULT_LOCK_TIMEOUT
from cas.digest import Digest
from cas.errors import BadDigest, NotCached, StoreError
from cas.store import IngestEntry, Store


@dataclass(frozen=True)
class Policy:
    """What a prune may evict besides unreferenced blobs."""

    keep_storage: int | None = None  # evict LRU images until blob bytes fit
    older_than: float | None = None  # evict images unused for this many seconds
    everything: bool = False  # evict every image (`--all`)


@dataclass(frozen=True)
class Image:
    ref: str
    blobs: tuple[tuple[str, int], ...]  # (digest, size) from the ref record, each digest once
    used: float
    pulled: float
    needs_pull: bool

    @property
    def size(self) -> int:
        return sum(size for _, size in self.blobs)


@dataclass(frozen=True)
class Stray:
    """Something under blobs/ that is not a blob: a symlink, a directory, a name that is no digest."""

    path: Path
    size: int
    kind: str  # "symlink", "directory", "not a digest", "special file"


@dataclass
class Snapshot:
    """What the index and the disk hold, read once: everything gc, du and verify decide from."""

    images: dict[str, Image] = field(default_factory=dict)
    indexed: dict[str, dict] = field(default_factory=dict)  # digest -> blob record
    files: dict[str, int] = field(default_factory=dict)  # digest -> bytes on disk (regular files)
    strays: list[Stray] = field(default_factory=list)
    leased: set[str] = field(default_factory=set)
    ingests: list[IngestEntry] = field(default_factory=list)
    active: set[Path] = field(default_factory=set)  # paths of the ingests a process holds (one flock test each)
    bad_keys: list[str] = field(default_factory=list)  # ref:/blob: entries that do not parse

    def refcounts(self) -> Counter:
        counts: Counter = Counter()
        for image in self.images.values():
            counts.update(d for d, _ in image.blobs)
        return counts

    def stale_ingests(self) -> list[IngestEntry]:
        """Ingest entries no process held when the snapshot was taken."""
        return [i for i in self.ingests if i.path not in self.active]


def snapshot(store: Store) -> Snapshot:
    """The index, then the disk."""
    snap = Snapshot()
    read_index(store, snap)
    read_disk(store, snap)
    return snap


def read_index(store: Store, snap: Snapshot) -> None:
    """Refs, blob records and live leases into ``snap``."""
    index = store.index
    for key, value in index.scan("ref:", "blob:"):
        if key.startswith("ref:"):
            image = _image(key[4:], value)
            if image is None:
                snap.bad_keys.append(key)
            else:
                snap.images[image.ref] = image
        else:
            try:
                digest = str(Digest.parse(key[5:]))
            except BadDigest:
                snap.bad_keys.append(key)
                continue
            if isinstance(value, dict) and isinstance(value.get("size"), int):
                snap.indexed[digest] = value
            else:
                snap.bad_keys.append(key)
    snap.leased = index.leased_digests()


def read_disk(store: Store, snap: Snapshot) -> None:
    """One walk of ``blobs/`` and ``ingest/`` into ``snap``; each ingest's lock is tested once."""
    for digest, path in store.blobs.iter_files():
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if digest is not None:
            snap.files[str(digest)] = st.st_size
        else:
            snap.strays.append(Stray(path, _stray_size(path, st), _kind(st)))
    snap.ingests = list(store.blobs.ingests())
    snap.active = {i.path for i in snap.ingests if i.active}


def _stray_size(path: Path, st: os.stat_result) -> int:
    """What removing a stray frees: a file's size, a directory's regular files (never following a link)."""
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        return _tree_size(None, path)
    return 0


def _tree_size(dir_fd: int | None, name: str | Path) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:  # gone, or a symlink swapped in: nothing to count
        return 0
    total = 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        total += _tree_size(fd, entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        pass
    finally:
        os.close(fd)
    return total


def _image(ref: str, record: object) -> Image | None:
    """The parts of a ref record gc needs; None when the record is malformed."""
    if not isinstance(record, dict) or not isinstance(record.get("blobs"), list):
        return None
    seen: dict[str, int] = {}
    for blob in record["blobs"]:
        if (
            not isinstance(blob, dict)
            or not isinstance(blob.get("digest"), str)
            or not isinstance(blob.get("size"), int)
        ):
            return None
        seen.setdefault(blob["digest"], blob["size"])
    pulled = _number(record.get("pulled"))
    used = _number(record.get("used")) or pulled
    return Image(ref, tuple(seen.items()), used, pulled, bool(record.get("needs_pull")))


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "not a digest"
    return "special file"


# planning ----------------------------------------------------------------


@dataclass
class Plan:
    """What a prune removes (or removed), and what it keeps."""

    dry_run: bool
    images: list[Image]  # evicted by the policy, least recently used first
    blobs: list[tuple[str, int, bool]]  # (digest, bytes on disk, has an index record)
    strays: list[Stray]
    ingests: list[IngestEntry]  # stale: no process holds their lock
    kept_images: int
    kept_blobs: int
    kept_bytes: int  # blob bytes left after the prune
    leased_blobs: int  # digests held only by running pulls/exports that the policy would otherwise free
    target: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return (
            sum(b for _, b, _ in self.blobs) + sum(s.size for s in self.strays) + sum(i.partial for i in self.ingests)
        )

    @property
    def over_target(self) -> bool:
        return self.target is not None and self.kept_bytes > self.target

    def freed_by_image(self) -> tuple[list[tuple[Image, int]], int]:
        """What each evicted image freed, and the bytes of removed blobs no evicted image listed.

        A blob two evicted images shared is counted once, for the one evicted first.
        """
        removed = {digest: size for digest, size, _ in self.blobs}
        claimed: set[str] = set()
        per_image = []
        for image in self.images:
            mine = {digest for digest, _ in image.blobs if digest in removed} - claimed
            claimed |= mine
            per_image.append((image, sum(removed[digest] for digest in mine)))
        return per_image, sum(size for digest, size in removed.items() if digest not in claimed)

    def to_json(self) -> dict:
        """The `cas prune --json` fields (conventions in cas.jsonout); a dry run reports what would go."""
        from cas.jsonout import timestamp

        per_image, unreferenced = self.freed_by_image()
        return {
            "dry_run": self.dry_run,
            "freed_bytes": self.freed_bytes,
            "freed_images": len(self.images),
            "freed_blobs": len(self.blobs),
            "freed_stray_files": len(self.strays),
            "freed_stale_downloads": len(self.ingests),
            "images": [
                {"ref": i.ref, "size": i.size, "freed_bytes": freed, "used_at": timestamp(i.used or None)}
                for i, freed in per_image
            ],
            "unreferenced_bytes": unreferenced,
            "blobs": [{"digest": d, "size": b, "indexed": x} for d, b, x in self.blobs],
            "stray_files": [{"path": str(s.path), "size": s.size, "kind": s.kind} for s in self.strays],
            "stale_downloads": [
                {"digest": str(i.digest), "partial_bytes": i.partial, "started_at": timestamp(i.started)}
                for i in self.ingests
            ],
            "kept_images": self.kept_images,
            "kept_blobs": self.kept_blobs,
            "kept_bytes": self.kept_bytes,
            "leased_blobs": self.leased_blobs,
            "keep_storage_bytes": self.target,
            "over_target": self.over_target,
            "errors": self.errors,
        }


def plan(snap: Snapshot, policy: Policy, *, now: float | None = None, dry_run: bool = True) -> Plan:
    if snap.bad_keys and any(k.startswith("ref:") for k in snap.bad_keys):
        bad = ", ".join(k[4:] for k in snap.bad_keys if k.startswith("ref:"))
        raise StoreError(
            f"cannot prune: malformed ref record(s) in the index: {bad}",
            hint="run `cas verify --repair` (it drops them), then prune again",
        )
    now = time.time() if now is None else now
    counts = snap.refcounts()
    files = snap.files
    leased = snap.leased

    def release(image: Image) -> int:
        """Drop one image's claims; the bytes that became free."""
        freed = 0
        for digest, _ in image.blobs:
            counts[digest] -= 1
            if counts[digest] == 0 and digest not in leased:
                freed += files.get(digest, 0)
        return freed

    lru = sorted(snap.images.values(), key=lambda i: (i.used, i.ref))
    evicted: list[Image] = []
    if policy.everything:
        evicted, lru = lru, []
    elif policy.older_than is not None:
        cutoff = now - policy.older_than
        evicted = [i for i in lru if i.used < cutoff]
        lru = [i for i in lru if i.used >= cutoff]
    for image in evicted:
        release(image)

    live = {d for d, c in counts.items() if c > 0} | leased
    live_bytes = sum(files.get(d, 0) for d in live)
    if policy.keep_storage is not None:
        while lru and live_bytes > policy.keep_storage:
            image = lru.pop(0)
            evicted.append(image)
            live_bytes -= release(image)
        live = {d for d, c in counts.items() if c > 0} | leased

    referenced = {d for d, c in counts.items() if c > 0}
    candidates = files.keys() | snap.indexed.keys()
    blobs = sorted((d, files.get(d, 0), d in snap.indexed) for d in candidates if d not in live)
    held = sum(1 for d in leased if d not in referenced and d in candidates)
    kept = [d for d in candidates if d in live]
    return Plan(
        dry_run=dry_run,
        images=evicted,
        blobs=blobs,
        strays=list(snap.strays),
        ingests=snap.stale_ingests(),
        kept_images=len(snap.images) - len(evicted),
        kept_blobs=len(kept),
        kept_bytes=sum(files.get(d, 0) for d in kept),
        leased_blobs=held,
        target=policy.keep_storage,
    )


# prune -------------------------------------------------------------------


def prune(
    store: Store,
    policy: Policy = Policy(),
    *,
    dry_run: bool = False,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    on_wait: Callable[[str], None] | None = None,
    now: float | None = None,
) -> Plan:
    """Remove what no kept image and no running pull or export needs; return what went.

    A dry run reads a snapshot and changes nothing. A real prune takes the store
    lock exclusively, then marks, forgets and sweeps while holding it.
    """
    if dry_run:
        return plan(snapshot(store), policy, now=now, dry_run=True)
    with store.lock(shared=False, timeout=lock_timeout, on_wait=on_wait):
        index = store.index
        snap = Snapshot()
        read_disk(store, snap)  # outside the transaction: no file changes under the exclusive lock
        with index.transact():  # roots re-read and index changed in one BEGIN IMMEDIATE
            read_index(store, snap)
            result = plan(snap, policy, now=now, dry_run=False)
            for image in result.images:
                index.remove_ref(image.ref)
            for digest, _, indexed in result.blobs:
                if indexed:
                    index.remove_blob(Digest.parse(digest))
        if result.images:
            store.write_layout_index()
        remover = Remover(store.blobs.blobs_dir)
        try:  # report only what went: a file that could not be removed is in errors, not in freed
            result.blobs = [b for b in result.blobs if _sweep_blob(remover, b[0], b[0] in snap.files, result.errors)]
            result.strays = [s for s in result.strays if remover.remove_path(s.path, result.errors)]
        finally:
            remover.close()
        result.ingests = [i for i in result.ingests if store.blobs.remove_ingest(i)]
    return result


def _sweep_blob(remover: Remover, digest: str, on_disk: bool, errors: list[str]) -> bool:
    """Delete a swept blob's file; True when it went (or it had none and dropping its record was all)."""
    failures = len(errors)
    removed = remover.remove_blob(Digest.parse(digest), errors)
    return removed or (not on_disk and len(errors) == failures)


def remove_images(store: Store, texts: Iterable[str]) -> list[dict]:
    """``cas rm``: forget refs (all or none); their blobs go at the next prune."""
    from cas.reference import parse

    wanted: dict[str, str] = {}
    for text in texts:
        wanted.setdefault(str(parse(text)), text)
    index = store.index
    removed = []
    with index.transact():
        records = {ref: index.get_ref(ref) for ref in wanted}
        unknown = [wanted[ref] for ref, record in records.items() if record is None]
        if unknown:
            raise NotCached(
                f"not in the cache: {', '.join(unknown)}",
                hint="`cas images` lists what is cached; nothing was removed",
            )
        for ref, record in records.items():
            index.remove_ref(ref)
            known = record if isinstance(record, dict) else {}  # a malformed record goes too
            removed.append({"ref": ref, "digest": known.get("digest"), "size": known.get("size")})
    store.write_layout_index()
    return removed


# removing files without following links ------------------------------------


class Remover:
    """Deletes entries below ``blobs/`` through directory fds opened with O_NOFOLLOW.

    ``blobs/`` itself may be reached through a symlink (CAS_HOME on another disk);
    nothing below it ever is.
    """

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self._top: int | None = None
        self._dirs: dict[str, int | None] = {}

    def _top_fd(self) -> int | None:
        if self._top is None:
            try:
                self._top = os.open(self.blobs_dir, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return None
        return self._top

    def _dir_fd(self, name: str) -> int | None:
        if name not in self._dirs:
            top = self._top_fd()
            fd = None
            if top is not None:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                except OSError:  # missing, a symlink, or not a directory: nothing to follow
                    fd = None
            self._dirs[name] = fd
        return self._dirs[name]

    def remove_blob(self, digest: Digest, errors: list[str]) -> bool:
        fd = self._dir_fd(digest.algorithm)
        if fd is None:
            return False
        return self._unlink(fd, digest.hex, errors, f"blobs/{digest.algorithm}/{digest.hex}")

    def remove_path(self, path: Path, errors: list[str]) -> bool:
        """A stray: ``blobs/<name>`` or ``blobs/<alg>/<name>``."""
        try:
            rel = path.relative_to(self.blobs_dir)
        except ValueError:
            errors.append(f"refusing to remove {path}: outside {self.blobs_dir}")
            return False
        parts = rel.parts
        if len(parts) == 1:
            fd = self._top_fd()
        elif len(parts) == 2:
            fd = self._dir_fd(parts[0])
        else:
            errors.append(f"refusing to remove {path}: not directly under blobs/<alg>/")
            return False
        if fd is None:
            return False
        return self._unlink(fd, parts[-1], errors, f"blobs/{rel}")

    def _unlink(self, dir_fd: int, name: str, errors: list[str], shown: str) -> bool:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows links inside
            else:
                os.unlink(name, dir_fd=dir_fd)  # a symlink goes as a link
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            errors.append(f"could not remove {shown}: {exc.strerror}")
            return False

    def close(self) -> None:
        for fd in self._dirs.values():
            if fd is not None:
                os.close(fd)
        self._dirs.clear()
        if self._top is not None:
            os.close(self._top)
            self._top = None
