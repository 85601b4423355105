"""The command line as a user meets it: help, version, Ctrl-C, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.tools import wait_until

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


def test_ctrl_c_and_sigterm_say_interrupted_and_exit_130(cas_home, proxy, registry, test_images):
    test_images.push(registry)
    proxy.throttle(50_000)
    for sig in (signal.SIGINT, signal.SIGTERM):
        home = cas_home / sig.name  # a fresh store each time: the signal must land mid-download
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "pull", f"{proxy.host}/base:latest"],
            cwd=REPO_ROOT,
            env={**os.environ, "CAS_HOME": str(home)},
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda home=home: any(p.stat().st_size for p in (home / "v1" / "ingest").glob("*/data")),
            timeout=30,
            what="a download in progress",
        )
        proc.send_signal(sig)
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 5, "the pull did not stop promptly"
        assert proc.returncode == 130
        assert err.strip().splitlines() == [
            "error: interrupted",
            "hint: the store is consistent; run the command again to finish",
        ]


def test_quiet_pull_prints_nothing_and_json_is_only_json(cas, registry, test_images):
    ref = test_images.ref(registry, "ocidata")
    quiet = cas("pull", "-q", ref)
    assert quiet.stdout == "" and quiet.stderr == ""
    loud = cas("pull", ref)
    assert loud.stdout == "" and loud.stderr.startswith(f"{ref}: ") and "reused 3" in loud.stderr
    as_json = cas("pull", "--json", ref)
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout)["images"][0]["reused_blobs"] == 3


def test_a_read_only_or_misplaced_store_is_a_one_line_error(cas, cas_home, tmp_path):
    cas("images")  # creates the store
    subprocess.run(["mount", "--bind", str(cas_home), str(cas_home)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cas_home)], check=True)
        for args in (["images"], ["pull", "127.0.0.1:9/x"], ["export", "x", "-o", str(tmp_path / "x.tar")], ["prune"]):
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
