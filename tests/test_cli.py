"""The command line as a user meets it: help, version, Ctrl-C, one-line errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.tools import wait_until

from cas.store import ranges

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("pull", "export", "images", "inspect", "rm", "du", "prune", "verify")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cas, command):
    proc = cas(command, "--help")
    assert proc.stdout.startswith("Usage: ") and command in proc.stdout


def test_version_and_top_level_help(cas):
    assert cas("--version").stdout.startswith("cas ")
    top = cas("--help").stdout
    for command in COMMANDS:
        assert command in top


def _default_signals() -> None:
    """In the child: SIGINT as a terminal delivers it, even when this pytest was started with it
    ignored (``nohup``, a background job), which Python would otherwise pass on to the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_and_sigterm_say_interrupted_and_exit_130(cas_home, proxy, registry, test_images):
    test_images.push(registry)
    proxy.throttle(50_000)
    layers = {lay.digest[7:]: lay.size for lay in test_images.base.layers}
    for sig in (signal.SIGINT, signal.SIGTERM):
        home = cas_home / sig.name  # a fresh store each time: the signal must land mid-download
        ingest = home / "v1" / "ingest"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "pull", f"{proxy.host}/base:latest"],
            cwd=REPO_ROOT,
            env={**os.environ, "CAS_HOME": str(home)},
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_signals,
        )

        def layer_partials(ingest=ingest) -> dict[str, int]:
            """Bytes a resume would keep, per layer: a split download's recorded ranges, not its file's size
            (its file is sized up front, and ranges not yet recorded are dropped on an interrupt)."""
            found = {p.parent.name.split("-", 1)[1]: p for p in ingest.glob("*/data")}
            held = {hexpart: (path.parent, path.stat().st_size) for hexpart, path in found.items() if hexpart in layers}
            return {hexpart: _held(*entry) for hexpart, entry in held.items()}

        wait_until(lambda: any(layer_partials().values()), timeout=30, what="a layer download in progress")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert err.strip().splitlines() == [
            "error: interrupted",
            "hint: the store is consistent; run the command again to finish",
        ]
        # it stopped mid-download (at 50 KB/s the busybox layer takes many seconds): a layer with partial
        # data kept and not committed. Its file size proves nothing: split downloads write at offsets.
        committed = {p.name for p in (home / "v1" / "blobs" / "sha256").glob("*")}
        partial = {hexpart for hexpart, size in layer_partials().items() if size and hexpart not in committed}
        assert partial, (layer_partials(), committed)


def test_quiet_pull_prints_nothing_and_json_is_only_json(cas, registry, test_images):
    ref = test_images.ref(registry, "ocidata")
    quiet = cas("pull", "-q", ref)
    assert quiet.stdout == "" and quiet.stderr == ""
    loud = cas("pull", ref)
    blobs = len(test_images.ocidata.digests)  # manifest, config, layers
    assert loud.stdout == "" and loud.stderr.startswith(f"{ref}: ") and f"reused {blobs}," in loud.stderr
    as_json = cas("pull", "--json", ref)
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout)["images"][0]["reused_blobs"] == blobs


def test_a_read_only_or_misplaced_store_is_a_one_line_error(cas, cas_home, tmp_path):
    cas("images")  # creates the store
    subprocess.run(["mount", "--bind", str(cas_home), str(cas_home)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cas_home)], check=True)
        assert cas("images").stdout.startswith("REFERENCE")  # opening the index writes nothing: reading works
        for args in (["pull", "127.0.0.1:9/x"], ["export", "x", "-o", str(tmp_path / "x.tar")], ["prune"]):
            proc = cas(*args, check=False)
            assert proc.returncode == 1, (args, proc.stderr)
            assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, (args, proc.stderr)
            assert "hint: check" in proc.stderr
    finally:
        subprocess.run(["umount", str(cas_home)], check=True)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    proc = cas("images", env={"CAS_HOME": str(not_a_dir)}, check=False)
    assert (
        proc.returncode == 1
        and proc.stderr.startswith("error: cannot use the store")
        and "Not a directory" in proc.stderr
    )


def _held(directory: Path, size: int) -> int:
    recorded = ranges.held_bytes(directory, size)
    return size if recorded is None else recorded
