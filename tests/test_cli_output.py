"""What commands print: one JSON shape, one unit system, and the conveniences around them."""

from __future__ import annotations

import datetime
import hashlib
import json
import re

HOLD_SHARED = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(60)
"""
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _body(cas, command: str, *args: str, check: bool = True) -> dict:
    proc = cas(command, *args, "--json", check=check)
    body = json.loads(proc.stdout)
    assert isinstance(body, dict) and body["schema"] == 1 and body["command"] == command, body
    return body


def _fields(value, path=""):
    """Every (dotted path, value) in a JSON body, lists flattened."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}".lstrip("."), item
            yield from _fields(item, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list):
        for item in value:
            yield from _fields(item, path)


def test_every_command_prints_one_enveloped_object_with_rfc3339_utc_times(cas, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    bodies = [_body(cas, "pull", base, app)]
    bodies += [_body(cas, "images"), _body(cas, "inspect", app), _body(cas, "du")]
    bodies.append(_body(cas, "export", app, "-o", str(tmp_path / "app.tar")))
    bodies.append(_body(cas, "verify"))
    bodies.append(_body(cas, "rm", base))
    bodies.append(_body(cas, "prune", "--dry-run", "--all"))
    bodies.append(_body(cas, "prune"))
    stamps = 0
    for body in bodies:
        for path, value in _fields(body):
            key = path.rsplit(".", 1)[-1]
            assert key == key.lower() and " " not in key, path
            if key.endswith("_at") and key != "created_at" and value is not None:
                assert RFC3339_UTC.match(value), (body["command"], path, value)
                parsed = datetime.datetime.fromisoformat(value)
                assert parsed.utcoffset() == datetime.timedelta(0)
                assert abs(parsed.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()) < 3600
                stamps += 1
            if key in ("pulled", "used", "created", "started"):
                raise AssertionError(f"{body['command']}: {path} is a bare time; times are *_at")
            if key == "size" or key.endswith("_bytes"):
                assert value is None or isinstance(value, int), (path, value)
    assert stamps >= 6  # images, inspect, du (pulled_at and used_at each), prune --dry-run


def test_one_name_keeps_one_meaning_across_commands(cas, registry, test_images, tmp_path):
    """`digest` is always the reference's own digest; `images` always a list of objects with `ref`."""
    multi = test_images.ref(registry, "multi")
    pulled = _body(cas, "pull", multi)["images"][0]
    listed = _body(cas, "images")["images"][0]
    inspected = _body(cas, "inspect", multi)
    index_digest = test_images.push(registry)["multi"].digest
    for body in (pulled, listed, inspected):
        assert body["digest"] == index_digest and body["manifest"] != index_digest
    exported = _body(cas, "export", "--pull", multi, "-o", str(tmp_path / "m.tar"))
    assert exported["pulled_refs"] == [] and [i["ref"] for i in exported["images"]] == [multi]
    assert "pulled" not in exported  # once the name of a list here and of a time in images


def test_images_shows_the_references_own_digest_filters_and_prints_refs_only(cas, registry, test_images):
    refs = {name: test_images.ref(registry, name) for name in ("base", "app", "multi")}
    cas("pull", "-q", *refs.values())
    pushed = test_images.push(registry)
    table = cas("images").stdout.splitlines()
    assert table[0].split() == ["REFERENCE", "DIGEST", "PLATFORM", "SIZE", "PULLED"]
    multi_row = next(line for line in table if line.startswith(refs["multi"]))
    assert pushed["multi"].digest[:19] in multi_row  # the index's digest, short like docker's IDs
    full = cas("images", "--digests").stdout
    assert pushed["multi"].digest in full and "MANIFEST" in full.splitlines()[0]
    assert cas("images", "-q").stdout.split() == sorted(refs.values())
    assert cas("images", "-q", f"{registry.host}/ba*").stdout.split() == [refs["base"]]
    assert cas("images", "-q", f"{registry.host}/app").stdout.split() == [refs["app"]]  # a bare name: every tag
    assert cas("images", "-q", "app").stdout.split() == [refs["app"]]  # without the registry host too
    assert cas("images", "-q", "nothing-like-this*").stdout == ""
    assert [r["ref"] for r in _body(cas, "images", "*/multi:*")["images"]] == [refs["multi"]]


def test_inspect_raw_and_config_print_the_stored_bytes(cas, registry, test_images):
    for name in ("base", "dockermedia", "multi"):
        ref = test_images.ref(registry, name)
        cas("pull", "-q", ref)
        raw = cas("inspect", ref, "--raw", text=False).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == test_images.push(registry)[name].digest
        config = cas("inspect", ref, "--config", text=False).stdout
        expected = _body(cas, "inspect", ref)["config"]["digest"]
        assert "sha256:" + hashlib.sha256(config).hexdigest() == expected
        assert json.loads(config)["config"]["Cmd"]


def test_inspect_text_shows_how_the_image_runs(cas, registry, test_images):
    ref = test_images.ref(registry, "app")
    cas("pull", "-q", ref)
    text = cas("inspect", ref).stdout
    assert re.search(r"^Cmd:\s+/bin/cat /hello.txt$", text, re.MULTILINE)
    assert re.search(r"^Working dir:\s+/$", text, re.MULTILINE)
    assert "  PATH=/usr/local/sbin:" in text and "  name=app" in text
    assert "Layers: 5" in text
    for layer in test_images.app.layers:
        assert re.search(rf"{layer.digest}\s+\d+(\.\d)? (B|KiB|MiB)\s", text), layer.digest


def test_sizes_are_iec_everywhere(cas, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    outputs = [cas("pull", base, app).stderr, cas("images").stdout, cas("du").stdout, cas("inspect", app).stdout]
    outputs.append(cas("export", app, "-o", str(tmp_path / "a.tar")).stderr)
    outputs.append(cas("prune", "--dry-run", "--all").stdout)
    for text in outputs:
        assert not re.search(r"\d (kB|KB|MB|GB)\b", text), text
        assert re.search(r"\d (KiB|MiB)\b", text), text


def test_prune_reports_what_each_image_freed_and_a_dry_run_says_would(cas, registry, test_images):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", "-q", base, app)
    dry = cas("prune", "--dry-run", "--all").stdout
    assert f"would remove image {base}: would free" in dry and f"would remove image {app}: would free" in dry
    assert "Would free" in dry and "Freed" not in dry
    planned = {i["ref"]: i["freed_bytes"] for i in _body(cas, "prune", "--dry-run", "--all")["images"]}
    real = _body(cas, "prune", "--all")
    freed = {i["ref"]: i["freed_bytes"] for i in real["images"]}
    assert freed == planned
    # base was evicted first (least recently used): the layers it shares with app count for it
    assert freed[base] == test_images.base.size
    shared = sum(b.size for b in test_images.app.blobs if b.digest in set(test_images.base.digests))
    assert freed[app] == test_images.app.size - shared
    assert sum(freed.values()) + real["unreferenced_bytes"] == real["freed_bytes"]


def test_quiet_silences_summaries(cas, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "base")
    cas("pull", "-q", ref)
    for args in (["export", "-q", ref, "-o", str(tmp_path / "b.tar")], ["verify", "-q"], ["rm", "-q", ref]):
        proc = cas(*args)
        assert proc.stdout == "" and proc.stderr == "", args
    proc = cas("prune", "-q")
    assert proc.stdout == "" and proc.stderr == ""


def test_verbose_logs_each_request_and_never_credentials(cas, basic_registry, test_images, tmp_path):
    ref = test_images.ref(basic_registry, "base")
    proc = cas("-v", "pull", "-u", basic_registry.username, "--password-stdin", ref, input=basic_registry.password)
    lines = [line for line in proc.stderr.splitlines() if " cas.registry.http: " in line]
    manifest = [line for line in lines if f"GET http://{basic_registry.host}/v2/base/manifests/latest" in line]
    assert any(re.search(r" 401, \d+ bytes in \d+\.\d+ s$", line) for line in manifest), lines
    assert any(re.search(r" 200, [1-9]\d* bytes in \d+\.\d+ s$", line) for line in manifest), lines
    blobs = [line for line in lines if "/blobs/sha256:" in line and " 200, " in line]
    assert len(blobs) == len(test_images.base.layers) + 1  # config and layers
    assert basic_registry.password not in proc.stderr and "Authorization" not in proc.stderr
    assert "Basic " not in proc.stderr
    after = cas("pull", ref, "-v", "-u", basic_registry.username, "--password-stdin", input=basic_registry.password)
    assert " cas.registry.http: GET " in after.stderr  # -v after the command works too


def test_verbose_logs_lock_waits(cas, cas_home):
    import subprocess
    import sys

    cas("images")  # creates the store
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SHARED, str(cas_home / "v1" / "lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = cas("-v", "prune", "--lock-timeout", "0.3", check=False)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1
    assert re.search(
        r"cas\.store\.locks: waiting to lock the cas store \(exclusive\) at \S+/v1/lock$", proc.stderr, re.M
    )
    assert "timed out" in proc.stderr


def test_progress_bars_count_in_iec_units():
    """The bars' size and speed columns, rendered for a task 3 MiB into 5 MiB at 1.5 MiB/s."""
    from types import SimpleNamespace

    from cli.progress import BarsObserver

    bars = BarsObserver()
    task = SimpleNamespace(completed=3 * 2**20, total=5 * 2**20, speed=1.5 * 2**20, finished=False)
    rendered = [str(column.render(task)) for column in bars._progress.columns[2:4]]
    assert rendered == ["3.0/5.0 MiB", "1.5 MiB/s"]


def test_verbose_on_a_terminal_logs_lines_instead_of_drawing_bars(cas_home, proxy, registry, test_images, tmp_path):
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    test_images.push(registry)
    proxy.throttle(1_000_000)  # slow enough that bars would be drawn
    root = Path(__file__).resolve().parent.parent
    command = f"cd {shlex.quote(str(root))} && {shlex.quote(sys.executable)} -m cli -v pull {proxy.host}/base:latest"
    typescript = tmp_path / "typescript"
    subprocess.run(
        ["script", "-q", "-e", "-c", command, str(typescript)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, "CAS_HOME": str(cas_home), "COLUMNS": "100", "TERM": "xterm"},
    )
    screen = typescript.read_text(errors="replace")
    assert "cas.registry.http: GET " in screen and "━" not in screen and "\x1b[" not in screen
