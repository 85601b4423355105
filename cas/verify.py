"""``cas verify``: check that the files agree with the index, and optionally mend them.

Modelled on diskcache's ``Cache.check(fix=True)``. By default every indexed blob
is checked for its size and its blake3 fingerprint (recorded at commit);
``deep`` re-hashes with the digest's own algorithm as well. Findings:

- ``corrupt``: a blob whose size or hash differs from what was committed;
- ``missing``: a blob the index or a ref names, with no file;
- ``orphan``: a file under blobs/ the index does not know: a digest nobody
  references, a name that is no digest, a directory, a symlink;
- ``unindexed``: a file a ref needs but with no index record (a process killed
  between commit and index write);
- ``stale-ingest``: a download directory no process holds that no pull can resume
  (unreadable, empty, or untouched for ``RESUMABLE_FOR``); a resumable one is listed in
  ``Report.resumable`` instead: it is not damage, and ``repair`` keeps it;
- ``bad-index-entry``: a ``ref:`` or ``blob:`` entry that does not parse;
- ``needs-pull``: a ref an earlier repair marked, not pulled again since;
- ``wrong-type``: a blob record whose media type its content (a manifest) or its image
  contradicts, as an import cut short by an older cas left them (``cas.blobtypes``);
  ``repair`` records the right one;
- ``store-total``: the index's running total of blob bytes (what the size budget reads instead
  of walking the store) disagrees with the blob records it sums.

``repair`` (under the store lock held exclusively) changes the index first, in
one transaction: it drops the records of corrupt and missing blobs, marks every
ref that lists one with ``needs_pull: true`` (the next ``cas pull`` of that ref
fetches the blobs again and writes a fresh record without the mark), re-indexes
unindexed blobs whose content hashes to their name, clears the mark of refs
whose blobs are all back, drops malformed entries and recounts the running total. Then it deletes the corrupt files, the orphans (never following a
symlink) and the stale ingest entries. On a nearly full disk it first releases the store's
ballast, as rm and prune do (``cas.store.ballast``), so that the transaction has room.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cas import DEFAULT_LOCK_TIMEOUT
from cas.blobtypes import contradictions
from cas.digest import Digest
from cas.jsonout import timestamp
from cas.records import PREFIX
from cas.snapshot import Snapshot, snapshot
from cas.store import IngestEntry, Store
from cas.store.ingest import RESUMABLE_FOR
from cas.store.remover import Remover
from cas.store.trust import check_file


@dataclass
class Finding:
    kind: str  # corrupt, missing, orphan, unindexed, stale-ingest, bad-index-entry, needs-pull
    what: str  # a digest, a path below the store root, or an index key
    detail: str
    refs: list[str] = field(default_factory=list)
    repaired: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "what": self.what,
            "detail": self.detail,
            "refs": self.refs,
            "repaired": self.repaired,
        }


@dataclass
class Report:
    deep: bool
    repair: bool
    checked_blobs: int = 0
    checked_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    needs_pull: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    resumable: list[dict] = field(default_factory=list)  # partial downloads a pull resumes: not damage
    now: float = field(default_factory=time.time)  # when it was taken: the age of downloads is measured from it

    @property
    def ok(self) -> bool:
        return not self.findings and not self.errors

    def to_json(self) -> dict:
        counts: dict[str, int] = defaultdict(int)
        for f in self.findings:
            counts[f.kind] += 1
        return {
            "ok": self.ok,
            "deep": self.deep,
            "repair": self.repair,
            "checked_blobs": self.checked_blobs,
            "checked_bytes": self.checked_bytes,
            "counts": dict(counts),
            "findings": [f.to_json() for f in self.findings],
            "needs_pull_refs": self.needs_pull,
            "resumable": self.resumable,
            "errors": self.errors,
        }


def verify(
    store: Store,
    *,
    deep: bool = False,
    repair: bool = False,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    on_wait: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> Report:
    """Check every blob; with ``repair``, mend what was found. Shared lock to check, exclusive to repair."""
    report = Report(deep=deep, repair=repair)
    with store.lock(shared=not repair, timeout=lock_timeout, on_wait=on_wait):
        snap = snapshot(store)
        users: dict[str, list[str]] = defaultdict(list)  # digest -> names of the images that list it
        for image in snap.images.values():
            for digest, _ in image.blobs:
                users[digest].append(image.record.name)
        findings = _check_blobs(store, snap, users, deep, report, workers)
        findings += _check_files(store, snap, users)
        findings += [
            Finding("stale-ingest", str(i.path.relative_to(store.root)), _why_stale(i, report.now))
            for i in snap.stale_ingests(report.now)
        ]
        report.resumable = [
            {
                "digest": i.label,
                "path": str(i.path.relative_to(store.root)),
                "partial_bytes": i.held,
                "age_seconds": max(0, int(report.now - i.modified)),
                "modified_at": timestamp(i.modified),
            }
            for i in snap.resumable_ingests(report.now)
        ]
        findings += [Finding("bad-index-entry", key, "index entry that does not parse") for key in snap.bad_keys]
        findings += _check_refs(snap)
        wrong = _wrong_types(store, snap)
        findings += [
            Finding("wrong-type", d, f"recorded as {r}, but it is {t}", sorted(users.get(d, ())))
            for d, (r, t) in wrong.items()
        ]
        findings += _check_total(store)
        report.findings = sorted(findings, key=lambda f: (f.kind, f.what))
        if repair and report.findings:
            with store.ballast.released():  # room for the index transaction on a full disk, as rm and prune
                _repair(store, snap, users, report)
                store.metadata.set_blob_types({Digest.parse(d): right for d, (_, right) in wrong.items()})
            for f in report.findings:
                if f.kind == "wrong-type":
                    f.repaired = f"recorded as {wrong[f.what][1]}"
    return report


# checking ------------------------------------------------------------------


RESUMABLE_DAYS = f"{RESUMABLE_FOR / 86400:.0f} days"


def _wrong_types(store: Store, snap: Snapshot) -> dict[str, tuple[str, str]]:
    """Blob records whose media type their content or their image contradicts (``cas.blobtypes``)."""
    present = {d: r for d, r in snap.indexed.items() if d in snap.files}
    return contradictions(
        (i.record for i in snap.images.values()), present, lambda d: store.blobs.read(Digest.parse(d))
    )


def _why_stale(entry: IngestEntry, now: float) -> str:
    """Why no pull can resume this download (the complement of ``IngestEntry.resumable``)."""
    what = f"abandoned download of {entry.label}, {entry.held} bytes"
    if entry.is_link:
        return f"{what}: a symlink, not a download"
    if entry.digest is None:
        return f"{what}: a staged import, never resumed"
    if not entry.readable:
        return f"{what}: its data cannot be read"
    if entry.held == 0:
        return f"{what}: nothing to resume"
    return f"{what}: untouched for {int((now - entry.modified) // 86400)} days (resumable for {RESUMABLE_DAYS})"


def _check_blobs(
    store: Store, snap: Snapshot, users: dict, deep: bool, report: Report, workers: int | None
) -> list[Finding]:
    findings = []
    jobs = []
    for digest, record in snap.indexed.items():
        if digest in snap.files:
            jobs.append((digest, record))
        else:
            findings.append(Finding("missing", digest, "indexed, but no file in blobs/", sorted(users.get(digest, ()))))
    for digest in users:
        if digest not in snap.indexed and digest not in snap.files:
            findings.append(
                Finding("missing", digest, "listed by a ref, but neither indexed nor in blobs/", sorted(users[digest]))
            )

    def check(job: tuple[str, dict]) -> tuple[str, str | None]:
        digest, record = job
        fingerprint = record.get("blake3") if isinstance(record.get("blake3"), str) else None
        return digest, check_file(
            store.blobs.path(Digest.parse(digest)), Digest.parse(digest), record["size"], fingerprint, deep
        ).problem

    with ThreadPoolExecutor(
        max_workers=workers or min(4, os.cpu_count() or 1), thread_name_prefix="cas-verify"
    ) as pool:
        for start in range(0, len(jobs), 512):  # in batches: pool.map makes every future at once
            for digest, problem in pool.map(check, jobs[start : start + 512]):
                report.checked_blobs += 1
                report.checked_bytes += snap.files[digest]
                if problem is not None:
                    findings.append(Finding("corrupt", digest, problem, sorted(users.get(digest, ()))))
    return findings


def _check_files(store: Store, snap: Snapshot, users: dict) -> list[Finding]:
    findings = []
    for digest in _unaccounted(store, snap):
        if digest in users:
            findings.append(
                Finding(
                    "unindexed", digest, "in blobs/ and needed by a ref, but not in the index", sorted(users[digest])
                )
            )
        else:
            findings.append(Finding("orphan", digest, "in blobs/ but not in the index"))
    for stray in snap.strays:
        findings.append(Finding("orphan", str(stray.path.relative_to(store.root)), f"{stray.kind} in blobs/"))
    return findings


def _unaccounted(store: Store, snap: Snapshot) -> list[str]:
    """Files under blobs/ that neither the index nor a lease accounts for, looked at twice.

    The snapshot reads the index before the disk. Under the shared lock a pull may lease a
    blob and commit it in between, so its file is on disk while the snapshot's index knows
    neither: a second look at the index, after the walk, sees its lease or its record (a
    lease is dropped only after the blob is recorded).
    """
    suspects = [d for d in snap.files if d not in snap.indexed and d not in snap.leased]
    if not suspects:
        return []
    leased = store.metadata.leased_digests()
    return [d for d in suspects if d not in leased and not store.metadata.has_blob_record(Digest.parse(d))]


def _check_refs(snap: Snapshot) -> list[Finding]:
    """Refs an earlier repair marked: still incomplete, or complete again and only the mark is left."""
    findings = []
    for image in snap.images.values():
        if not image.needs_pull:
            continue
        missing = sum(1 for d, _ in image.blobs if d not in snap.files)
        detail = (
            f"marked needs_pull by verify --repair; {missing} blob(s) missing"
            if missing
            else ("marked needs_pull by verify --repair, but every blob is back")
        )
        findings.append(Finding("needs-pull", image.record.name, detail, [image.record.name]))
    return findings


def _check_total(store: Store) -> list[Finding]:
    total, counted = store.metadata.audit_blob_bytes()  # one transaction: a concurrent commit changes both or neither
    if total is None or total == counted:  # none yet (a store from before it): counted on first use
        return []
    return [
        Finding("store-total", "index", f"running total of blob bytes is {total}, the blob records add up to {counted}")
    ]


# repairing ---------------------------------------------------------------------


@dataclass
class _Mend:
    """What a repair changes, decided from the findings before anything is touched."""

    bad: set[str] = field(default_factory=set)  # digests whose record and file go
    reindex: list[tuple[Digest, int, str, str, dict | None]] = field(default_factory=list)
    affected: list[str] = field(default_factory=list)  # images that list a bad blob: marked needs_pull
    complete: list[str] = field(default_factory=list)  # marked images whose blobs are all back: mark cleared


def _repair(store: Store, snap: Snapshot, users: dict, report: Report) -> None:
    """The index first, in one transaction; the files second; then the stale downloads."""
    images = {image.record.name: image.record for image in snap.images.values()}
    mend = _plan_repair(store, snap, users, report, images)
    _repair_index(store, snap, mend, images)
    marked = set(mend.affected) | {f.what for f in report.findings if f.kind == "needs-pull"} - set(mend.complete)
    report.needs_pull = sorted({images[name].ref for name in marked})
    if any(k.startswith(PREFIX) for k in snap.bad_keys):
        store.write_layout_index()
    _repair_files(store, mend, report)
    for entry in snap.stale_ingests(report.now):
        if store.ingests.remove(entry):  # False when a download took it up since
            for f in report.findings:
                if f.kind == "stale-ingest" and f.what == str(entry.path.relative_to(store.root)):
                    f.repaired = "deleted"


def _plan_repair(store: Store, snap: Snapshot, users: dict, report: Report, images: dict) -> _Mend:
    mend = _Mend()
    for f in report.findings:
        if f.kind in ("corrupt", "missing"):
            mend.bad.add(f.what)
        elif f.kind == "unindexed":
            digest = Digest.parse(f.what)
            checked = check_file(store.blobs.path(digest), digest, None, None, deep=True)  # one read: digest and blake3
            if checked.problem is not None:
                f.detail += f"; {checked.problem}"
                mend.bad.add(f.what)
                continue
            mend.reindex.append(
                (digest, snap.files[f.what], _media_type(snap, digest), checked.fingerprint, checked.stat)
            )
    mend.affected = sorted({name for d in mend.bad for name in users.get(d, ())})
    # a marked image whose blobs are all present, none of them bad: the mark can go
    mend.complete = [
        f.what
        for f in report.findings
        if f.kind == "needs-pull"
        and f.what not in mend.affected
        and all(d in snap.files and d not in mend.bad for d in map(str, images[f.what].unique_blobs))
    ]
    return mend


def _repair_index(store: Store, snap: Snapshot, mend: _Mend, images: dict) -> None:
    index = store.metadata
    with index.transact():
        for digest in mend.bad:
            index.remove_blob(Digest.parse(digest))
        for name, mark in [(name, True) for name in mend.affected] + [(name, False) for name in mend.complete]:
            record = index.get_ref(images[name].ref, images[name].platform)  # re-read: a pull may have rewritten it
            if record is not None:
                index.put_ref(record.replace(needs_pull=mark))
        for digest, size, media_type, fingerprint, committed in mend.reindex:
            index.put_blob(digest, size=size, media_type=media_type, fingerprint=fingerprint, stat=committed)
        for key in snap.bad_keys:
            index.discard(key)
        index.recount_blob_bytes()


def _repair_files(store: Store, mend: _Mend, report: Report) -> None:
    """Delete what the index no longer names (never following a symlink) and say what became of each finding."""
    remover = Remover(store.blobs.blobs_dir)
    try:
        for f in report.findings:
            if f.kind in ("corrupt", "unindexed") and f.what in mend.bad:
                remover.remove_blob(Digest.parse(f.what), report.errors)
                f.repaired = "deleted; " + _marked(f)
            elif f.kind == "missing":
                f.repaired = "index record dropped; " + _marked(f)
            elif f.kind == "unindexed":
                f.repaired = "content verified and re-indexed"
            elif f.kind == "orphan":
                path = store.root / f.what if "/" in f.what else store.blobs.path(Digest.parse(f.what))
                if remover.remove_path(path, report.errors) or not os.path.lexists(path):
                    f.repaired = "deleted"
            elif f.kind == "bad-index-entry":
                f.repaired = "dropped from the index"
            elif f.kind == "store-total":
                f.repaired = "recounted from the blob records"
            elif f.kind == "needs-pull":
                f.repaired = "mark cleared" if f.what in mend.complete else f"still needs `cas pull {f.what}`"
    finally:
        remover.close()


def _marked(finding: Finding) -> str:
    return f"refs marked needs_pull: {', '.join(finding.refs)}" if finding.refs else "no ref needed it"


def _media_type(snap: Snapshot, digest: Digest) -> str:
    """The media type a ref record gives the blob (re-indexing needs one)."""
    for image in snap.images.values():
        entry = image.record.entry(digest)
        if entry is not None and entry.media_type:
            return entry.media_type
    return "application/octet-stream"
