"""Credentials at rest: a bearer token obtained with a user's credentials is
never in a file other users can read, whatever the umask. Checked with real file modes and a
real other user (nobody), not by reading our own code's intentions."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def _cas_with_umask(umask: int, home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        input=input,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(umask),
        check=False,
    )


@pytest.fixture
def open_home(cas_home):
    """A CAS_HOME every user may reach (pytest's own temp root is 0700, which would hide everything)."""
    home = Path(tempfile.mkdtemp(prefix="cas-modes-", dir="/tmp"))
    os.chmod(home, 0o777)
    yield home
    shutil.rmtree(home)


def _tokens(home: Path) -> dict[str, str]:
    from cas.store import Store

    store = Store(home)
    try:
        return {
            key: value for key, value in store.metadata.scan("token:") if isinstance(value, str) and len(value) > 20
        }
    finally:
        store.close()


def _readable_by_nobody(path: Path) -> bool:
    return subprocess.run([*NOBODY, "cat", str(path)], capture_output=True).returncode == 0


def test_a_token_from_credentials_is_in_no_file_others_can_read_under_umask_0(open_home, token_registry, test_images):
    cas_home = open_home
    ref = test_images.ref(token_registry, "base")
    pulled = _cas_with_umask(
        0o000, cas_home, "pull", "-u", token_registry.username, "--password-stdin", ref, input=token_registry.password
    )
    assert pulled.returncode == 0, pulled.stderr

    tokens = _tokens(cas_home)
    assert any("|user:" in key for key in tokens), tokens  # a credential-derived token was cached
    holders = [
        p for p in cas_home.rglob("*") if p.is_file() and any(t.encode() in p.read_bytes() for t in tokens.values())
    ]
    assert holders, "the token must be somewhere: the test would prove nothing"
    for path in holders:
        assert not _readable_by_nobody(path), f"{path} holds a bearer token that user nobody can read"

    index = cas_home / "v1" / "index"
    assert stat.S_IMODE(index.stat().st_mode) == 0o700
    for path in index.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # the public parts of the store stay readable: blobs are not secrets, the layout is for skopeo
    assert _readable_by_nobody(cas_home / "v1" / "index.json")


def test_an_existing_store_with_open_modes_is_made_private_at_its_next_use(open_home, token_registry, test_images):
    cas_home = open_home
    ref = test_images.ref(token_registry, "base")
    assert _cas_with_umask(0o000, cas_home, "pull", ref).returncode == 0
    index = cas_home / "v1" / "index"
    os.chmod(index, 0o777)  # as a store made before the rule, under umask 0, would be
    for path in index.iterdir():
        os.chmod(path, 0o666)
    assert _cas_with_umask(0o000, cas_home, "images").returncode == 0
    assert stat.S_IMODE(index.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in index.iterdir()} == {0o600}
