"""Progress bars as a user sees them: `cas pull` in a real terminal (a tmux pane, whose screen
``capture-pane`` reads back), and byte-exact recordings (``script``) showing that nothing is
drawn when stderr is not a terminal or the output is JSON."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.terminal import Pane
from support.tools import require, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
BAR = "━"


def _pull_command(cas_home: Path, *args: str, command: str = "pull") -> str:
    # COLUMNS/LINES from the test's own environment would override the pane's real size
    env = f"env -u COLUMNS -u LINES CAS_HOME={shlex.quote(str(cas_home))} DOCKER_CONFIG={shlex.quote(os.environ['DOCKER_CONFIG'])}"
    cas = f"{shlex.quote(sys.executable)} -m cli {command} {' '.join(map(shlex.quote, args))}"
    return f"cd {shlex.quote(str(REPO_ROOT))} && {env} {cas}; echo EXIT=$?; sleep 600"


BLOB_BAR = re.compile(rf"  sha256:[0-9a-f]{{12}} +{BAR}")


def _bars_then_end(terminal: Pane, what: str) -> tuple[list[str], list[str]]:
    """The non-blank lines of the screen once a blob's bar is drawn, then once the command has exited."""
    drawing = wait_until(
        lambda: (lambda s: s if any(BLOB_BAR.match(line) for line in s) else None)(terminal.screen()),
        timeout=60,
        what=f"{what} progress bars on the terminal",
    )
    final = wait_until(
        lambda: (lambda s: s if "EXIT=0" in s else None)(terminal.screen()), timeout=60, what=f"the {what} to end"
    )
    return [line for line in drawing if line], [line for line in final if line]


@pytest.mark.parametrize("width", [200, 80], ids=["wide", "summary-wraps"])
def test_bars_appear_while_downloading_and_give_way_to_the_summary(width, pane, cas_home, proxy, registry, test_images):
    test_images.push(registry)
    ref = f"{proxy.host}/base:latest"
    proxy.throttle(300_000)  # a few seconds: the bars are drawn ten times a second
    terminal = pane(width)
    terminal.start(_pull_command(cas_home, ref))

    drawn, final = _bars_then_end(terminal, "pull")
    assert drawn[0].startswith(f"{ref} {BAR}"), drawn  # the total first, then one bar per blob
    assert 1 <= len(drawn) - 1 <= 4 and all(BLOB_BAR.match(line) for line in drawn[1:]), drawn
    assert final[-1] == "EXIT=0" and not any(BAR in line for line in final), final  # no bar left behind
    summary = " ".join(final[:-1])  # rich wraps the line at the terminal's width
    assert re.fullmatch(
        rf"{re.escape(ref)}: {test_images.base.digest[:19]} linux/amd64 +downloaded {len(test_images.base.digests)} "
        r"blob\(s\), 1\.1 MiB; "
        r"reused 0, 0 B saved \(\d+\.\d\ds\)",
        summary,
    ), final


def test_push_draws_bars_while_uploading_then_its_summary(pane, cas, cas_home, proxy, registry, test_images):
    source = test_images.ref(registry, "base")
    cas("pull", source)
    dest = f"{proxy.host}/bars-{os.getpid()}/base:1"
    proxy.throttle_uploads(300_000)  # the busybox layer takes a few seconds
    terminal = pane(200)
    terminal.start(_pull_command(cas_home, source, dest, command="push"))

    drawn, final = _bars_then_end(terminal, "push")
    assert drawn[0].startswith(f"{dest} {BAR}"), drawn
    assert 1 <= len(drawn) - 1 <= 4 and all(BLOB_BAR.match(line) for line in drawn[1:]), drawn
    assert final[-1] == "EXIT=0" and not any(BAR in line for line in final), final
    assert re.fullmatch(
        rf"{re.escape(dest)}: {test_images.base.digest[:19]} \(1 manifest\(s\)\) +uploaded 4 blob\(s\), 1\.1 MiB; "
        r"mounted 0, 0 B; skipped 0, 0 B \(\d+\.\d\ds\)",
        " ".join(final[:-1]),
    ), final


def _recorded(tmp_path: Path, command: str) -> bytes:
    """Everything a terminal would have received while ``command`` ran on it (``script``)."""
    typescript = tmp_path / "typescript"
    subprocess.run(
        [require("script", "bsdutils"), "-q", "-e", "-c", command, str(typescript)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    data = typescript.read_bytes()
    return data[data.index(b"\n") + 1 : data.rindex(b"\nScript done")]  # script's own header and footer


def test_nothing_is_drawn_when_stderr_is_not_a_terminal_or_the_output_is_json(
    cas, cas_home, proxy, registry, test_images, tmp_path
):
    test_images.push(registry)
    proxy.throttle(1_000_000)
    base, ocidata = f"{proxy.host}/base:latest", f"{proxy.host}/ocidata:latest"
    piped = cas("pull", base)  # stderr is a pipe
    blobs = len(test_images.base.digests)  # manifest, config, layers
    assert re.fullmatch(rf"{re.escape(base)}: sha256:\S+ linux/amd64  downloaded {blobs} blob\(s\).*\n", piped.stderr)

    cas_cmd = f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.quote(sys.executable)} -m cli pull"
    stderr_file = tmp_path / "stderr"
    on_tty = _recorded(tmp_path, f"{cas_cmd} {ocidata} 2>{stderr_file}")  # stdout a terminal, stderr a file
    assert on_tty == b""
    assert re.fullmatch(rf"{re.escape(ocidata)}: \S+ linux/amd64  downloaded \d blob\(s\).*\n", stderr_file.read_text())

    cas("rm", base, ocidata)
    cas("prune")
    as_json = _recorded(tmp_path, f"{cas_cmd} --json {base}")
    assert b"\x1b" not in as_json and BAR.encode() not in as_json, as_json[:300]
    assert (
        as_json.lstrip().startswith(b"{") and f'"downloaded_blobs": {len(test_images.base.digests)}'.encode() in as_json
    )
