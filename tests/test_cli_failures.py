"""How commands fail, as a user and a script meet it: JSON on failure, hints, and the small edges.

Each test here failed before the behaviour it names was built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def _failure(proc, command: str, exit_code: int) -> dict:
    """The one JSON object a failing ``--json`` command prints, checked against its stderr line."""
    assert proc.returncode == exit_code, proc.stderr
    body = json.loads(proc.stdout)
    assert body["schema"] == 1 and body["command"] == command
    error = body["error"]
    assert set(error) == {"message", "hint", "exit_code"} and error["exit_code"] == exit_code
    assert f"error: {error['message']}" in proc.stderr.splitlines()  # the person watching reads the same
    return body


@pytest.mark.parametrize(
    ("command", "args", "exit_code"),
    [
        ("pull", ["{reg}/team/nope:1"], 1),
        ("pull", ["--jobs", "0", "x"], 2),  # a usage mistake click finds before the command runs
        ("push", ["{reg}/never/pulled:1", "{reg}/dest:1"], 1),
        ("export", ["{reg}/never/pulled:1", "-o", "{tmp}/x.tar"], 1),
        ("import", ["{tmp}/no-such.tar"], 2),
        ("images", ["--no-such-option"], 2),
        ("inspect", ["{reg}/never/pulled:1"], 1),
        ("rm", ["{reg}/never/pulled:1"], 1),
        ("du", ["--no-such-option"], 2),
        ("prune", ["--keep-storage", "10XB"], 2),
        ("verify", ["--lock-timeout", "-1"], 2),
        ("login", ["-u", "me", "--password-stdin", "{reg}"], 2),  # stdin is empty
        ("logout", ["--no-such-option"], 2),
    ],
)
def test_every_command_with_json_prints_one_object_on_failure(cas, registry, tmp_path, command, args, exit_code):
    filled = [arg.format(reg=registry.host, tmp=tmp_path) for arg in args]
    proc = cas(command, "--json", *filled, check=False, input="")
    _failure(proc, command, exit_code)


def test_a_pull_of_several_that_all_fail_says_none_was_pulled(cas, registry, test_images):
    missing, closed = f"{registry.host}/team/nope:1", "127.0.0.1:9/x:1"
    body = _failure(cas("pull", "--json", missing, closed, check=False), "pull", 1)
    assert body["images"] == [] and [f["ref"] for f in body["failed"]] == [missing, closed]
    assert body["error"]["message"] == f"2 of 2 references failed to pull: {missing}, {closed}"
    assert "the others were pulled" not in body["error"]["hint"] and "none was pulled" in body["error"]["hint"]

    base = test_images.ref(registry, "base")
    some = _failure(cas("pull", "--json", missing, base, check=False), "pull", 1)
    assert [i["ref"] for i in some["images"]] == [base] and [f["ref"] for f in some["failed"]] == [missing]
    assert some["error"]["hint"].endswith("the others were pulled")

    one = _failure(cas("pull", "--json", missing, check=False), "pull", 1)
    assert one["images"] == [] and [f["ref"] for f in one["failed"]] == [missing]
    assert one["error"]["message"] == one["failed"][0]["error"] and one["error"]["message"].startswith("image ")


def test_login_and_logout_take_json(cas, basic_registry):
    host, user = basic_registry.host, basic_registry.username
    proc = cas("login", "--json", "-u", user, "--password-stdin", host, input=f"{basic_registry.password}\n")
    body = json.loads(proc.stdout)
    assert body["command"] == "login" and body["registry"] == host and body["username"] == user
    assert body["saved_in"].endswith("config.json") and proc.stderr == ""
    assert json.loads(cas("logout", "--json", host).stdout) == {
        "schema": 1, "command": "logout", "registry": host, "removed": True
    }  # fmt: skip
    refused = cas("login", "--json", "-u", user, "--password-stdin", host, input="wrong\n", check=False)
    assert "authentication failed" in _failure(refused, "login", 1)["error"]["message"]


def test_logout_when_not_logged_in_says_so_and_succeeds(cas, basic_registry):
    proc = cas("logout", basic_registry.host)
    assert proc.returncode == 0 and proc.stderr == f"not logged in to {basic_registry.host}: nothing to remove\n"
    assert json.loads(cas("logout", "--json", basic_registry.host).stdout)["removed"] is False


def test_an_empty_password_on_stdin_is_named_as_such(cas, basic_registry):
    for command in (
        ["login", "-u", "me", "--password-stdin", basic_registry.host],
        ["pull", "-u", "me", "--password-stdin", "x"],
    ):
        proc = cas(*command, input="", check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines()[0] == "error: --password-stdin: the password on standard input was empty"
        assert "--username" not in proc.stderr.splitlines()[0]


def test_login_takes_hosts_dir(cas, basic_registry, tmp_path):
    """--hosts-dir as pull takes it: here a hosts.toml puts the name team.example on the local registry."""
    directory = tmp_path / "hosts.d" / "team.example"
    directory.mkdir(parents=True)
    (directory / "hosts.toml").write_text(f'server = "http://{basic_registry.host}"\n')
    mark = basic_registry.mark()
    proc = cas(
        "login", "--hosts-dir", str(tmp_path / "hosts.d"), "-u", basic_registry.username, "--password-stdin",
        "team.example", input=f"{basic_registry.password}\n", env={"CAS_HOSTS_DIR": ""},
    )  # fmt: skip
    assert proc.stderr.startswith(f"logged in to {basic_registry.host} as {basic_registry.username}")
    assert [r.status for r in basic_registry.requests(mark) if r.path == "/v2/"] == [401, 200]
    logout = cas("logout", "--hosts-dir", str(tmp_path / "hosts.d"), "team.example", env={"CAS_HOSTS_DIR": ""})
    assert logout.stderr == f"removed login for {basic_registry.host}\n"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [("UPPER/Case:tag", "upper/case:tag"), ("127.0.0.1:5000/Team/App:V1", "127.0.0.1:5000/team/app:V1")],
)
def test_an_invalid_reference_gets_a_hint(cas, text, suggestion):
    proc = cas("pull", text, check=False)
    assert proc.returncode == 2
    error, hint = proc.stderr.splitlines()
    assert error == f"error: invalid reference {text!r}: repository name must be lowercase"
    assert hint.startswith("hint: ") and hint.endswith(f": {suggestion}")


@pytest.mark.parametrize("text", ["a b", "host:5000/", "bad_host:5000/x:1", "x" * 300])
def test_every_invalid_reference_has_a_hint(cas, text):
    proc = cas("pull", text, check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 2, proc.stderr
    assert proc.stderr.splitlines()[1].startswith("hint: ")


def test_not_cached_is_worded_one_way_in_rm_inspect_push_and_export(cas, registry, tmp_path):
    ref = f"{registry.host}/never/pulled:1"
    for args in (
        ["rm", ref],
        ["inspect", ref],
        ["push", ref, f"{registry.host}/dest:1"],
        ["export", ref, "-o", str(tmp_path / "x")],
    ):
        proc = cas(*args, check=False)
        assert proc.returncode == 1 and proc.stderr.splitlines()[0] == f"error: not in the cache: {ref}", args


def test_inspect_suggests_the_cached_references_of_the_repository(cas, registry, test_images):
    base = test_images.ref(registry, "base")
    cas("pull", "-q", base)
    proc = cas("inspect", f"{registry.host}/base:nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[1] == (
        f"hint: cached of {registry.host}/base: {base}; or run `cas pull {registry.host}/base:nope` first"
    )
    other = cas("inspect", f"{registry.host}/other:1", check=False)  # nothing of that repository: no list
    assert other.stderr.splitlines()[1] == f"hint: run `cas pull {registry.host}/other:1` first"


def test_progress_bars_never_say_bytes_beside_kib():
    """A blob under 1 KiB next to the total in KiB: every size column in cas's units (B, KiB), never `bytes`."""
    from types import SimpleNamespace

    from cli.progress import BarsObserver

    columns = BarsObserver()._progress.columns[2:4]
    small = SimpleNamespace(completed=951, total=951, speed=None, finished=False)
    total = SimpleNamespace(completed=951, total=1100, speed=None, finished=False)
    assert [str(column.render(small)) for column in columns] == ["951/951 B", "?"]
    assert str(columns[0].render(total)) == "0.9/1.1 KiB"


def test_show_completion_for_an_unsupported_shell_names_the_supported_ones(cas):
    proc = cas("--show-completion", "tcsh", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: cannot complete for shell 'tcsh'",
        "hint: cas completes in bash, zsh and fish: --show-completion bash, zsh or fish",
    ]


def test_import_bar_counts_in_cas_units(tmp_path):
    """The import bar (a pipe has no total) shows what it stored in the same units as the pull bars."""
    from cli.import_ import _Bar

    source = tmp_path / "a.tar"
    source.write_bytes(b"x" * 951)
    bar = _Bar(Path(os.fspath(source)))
    task = bar._progress.tasks[0]
    bar._progress.advance(bar._task, 951)
    assert "951/951 B" in [str(column.render(task)) for column in bar._progress.columns]
