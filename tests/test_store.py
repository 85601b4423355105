"""The blob store's promises, checked on real files and real processes."""

import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest
from support.tools import wait_until

from cas.digest import of_bytes
from cas.errors import DigestMismatch, DiskFull, LockTimeout, SizeMismatch
from cas.store.fs import Linker, storage_errors
from cas.store.locks import FileLock


def _write(store, data, digest=None, size=None):
    digest = digest or of_bytes(data)
    with store.ingests.open(digest, len(data) if size is None else size) as ing:
        assert not ing.committed
        ing.write(data)
        return ing.commit()


def test_commit_makes_a_verified_read_only_blob(store):
    data = os.urandom(100_000)
    info = _write(store, data)
    path = store.blobs.path(info.digest)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert not any(store.ingests.dir.iterdir()), "ingest entry left behind"
    assert store.root.joinpath("oci-layout").read_text() == '{"imageLayoutVersion": "1.0.0"}'


def test_wrong_bytes_are_never_committed(store):
    claimed = of_bytes(b"the real content")
    with pytest.raises(DigestMismatch) as info:
        _write(store, b"evil content 123", digest=claimed)
    assert str(claimed) in info.value.message
    assert not store.blobs.has(claimed)
    with pytest.raises(SizeMismatch):
        _write(store, b"x" * 10, digest=claimed, size=5)
    assert not store.blobs.has(claimed)
    assert list(store.blobs.iter_files()) == []


def test_existing_blob_is_reused_not_rewritten(store):
    data = b"abc" * 1000
    info = _write(store, data)
    with store.ingests.open(info.digest, len(data)) as ing:
        assert ing.committed


def test_partial_download_resumes_from_offset(store):
    data = os.urandom(300_000)
    digest = of_bytes(data)
    try:
        with store.ingests.open(digest, len(data)) as ing:
            ing.write(data[:123_456])
            raise ConnectionError("dropped")
    except ConnectionError:
        pass
    assert not store.blobs.has(digest)
    with store.ingests.open(digest, len(data)) as ing:
        assert ing.offset == 123_456
        ing.write(data[123_456:])
        ing.commit()
    assert store.blobs.read(digest) == data


def test_disk_full_is_a_clear_error():
    with pytest.raises(DiskFull) as info:
        with storage_errors("blob sha256:x"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "no space left" in info.value.message and "cas prune" in info.value.hint


def test_lock_timeout_is_actionable(tmp_path):
    holder = subprocess.Popen(  # another process holds the lock
        [sys.executable, "-c", _HOLD, str(tmp_path / "lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        waits = []
        with pytest.raises(LockTimeout) as info:
            FileLock(tmp_path / "lock", shared=True, timeout=0.2, on_wait=waits.append).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert "timed out" in info.value.message and "--lock-timeout" in info.value.hint
    assert info.value.hint.startswith("another cas process")
    assert waits == ["waiting for another cas process to release the cas store..."]


def test_a_lock_this_process_holds_is_not_blamed_on_another_process(tmp_path):
    held = FileLock(tmp_path / "lock", purpose="the download of sha256:abc")
    held.acquire()
    waits = []
    try:
        with pytest.raises(LockTimeout) as info:
            FileLock(
                tmp_path / "lock", timeout=0.2, purpose="the download of sha256:abc", on_wait=waits.append
            ).acquire()
    finally:
        held.release()
    assert waits == [] and info.value.hint.startswith("another part of this cas command holds it")
    with FileLock(tmp_path / "lock", timeout=0.2, on_wait=waits.append):  # released: no wait at all
        pass
    assert waits == []


_HOLD = """
import fcntl, sys, time
lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_linker_falls_back_to_copy_once(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(b"data")
    warnings = []
    linker = Linker(warnings.append)

    def cross_device(a, b, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    linker.link(src, tmp_path / "a")
    linker.link(src, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"data" == (tmp_path / "b").read_bytes()
    assert len(warnings) == 1 and "copying" in warnings[0]


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cas.digest import Digest
    from cas.store import Store
    home, digest, path, pause = sys.argv[1], Digest.parse(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    hold = int(sys.argv[5])  # after this many bytes: say "held" and block until killed (0: never)
    data = Path(path).read_bytes()
    store = Store(Path(home))
    with store.ingests.open(digest, len(data)) as ing:
        if ing.committed:
            print("reused", flush=True)
            sys.exit(0)
        print("writing", flush=True)
        print("from", ing.offset, flush=True)
        for i in range(ing.offset, len(data), 65536):
            ing.write(data[i:i + 65536])
            if hold and i + 65536 >= hold:
                print("held", flush=True)
                sys.stdin.readline()
            time.sleep(pause)
        ing.commit()
        print("committed", flush=True)
    """
)


def _spawn(tmp_path, store, digest, source, pause, hold=0):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store.home), str(digest), str(source), str(pause), str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_write_leaves_no_bad_blob_and_the_next_writer_completes(tmp_path, store):
    data = os.urandom(2 << 20)
    digest = of_bytes(data)
    source = tmp_path / "source"
    source.write_bytes(data)
    proc = _spawn(tmp_path, store, digest, source, 0, hold=1 << 20)
    assert [proc.stdout.readline().strip() for _ in range(3)] == ["writing", "from 0", "held"]
    data_file = next(e.path for e in store.ingests.entries() if e.digest == digest) / "data"
    wait_until(lambda: data_file.stat().st_size >= 1 << 20, timeout=30, what="1 MiB of partial data on disk")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for found, path in store.blobs.iter_files():
        assert found is not None and hashlib.sha256(path.read_bytes()).hexdigest() == found.hex
    assert not store.blobs.has(digest)
    partial = [e for e in store.ingests.entries() if e.digest == digest]
    assert partial and 0 < partial[0].partial < len(data) and not partial[0].active
    follower = _spawn(tmp_path, store, digest, source, 0)
    assert follower.communicate()[0].split() == ["writing", "from", str(partial[0].partial), "committed"]
    assert store.blobs.read(digest) == data


def test_two_processes_write_one_digest_once(tmp_path, store):
    data = os.urandom(1 << 20)
    digest = of_bytes(data)
    source = tmp_path / "source"
    source.write_bytes(data)
    first = _spawn(tmp_path, store, digest, source, 0.01)
    assert first.stdout.readline().strip() == "writing"
    second = _spawn(tmp_path, store, digest, source, 0)
    assert second.communicate(timeout=60)[0].strip() == "reused"
    assert first.communicate(timeout=60)[0].split()[-1] == "committed"
    assert store.blobs.read(digest) == data
