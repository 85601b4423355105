"""Settings from flag, variable, config file and default (cas.settings), and `cas config` naming each origin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_budget import _image, _push


def _config(cas, **env: str) -> dict[str, dict]:
    body = json.loads(cas("config", "--json", env=env).stdout)
    return {entry["key"]: entry for entry in body["settings"]}


def _three_pulls(cas, home: Path, refs: list[str], env: dict[str, str], *flag: str) -> dict:
    """Pull three images into a fresh store; the budget the last pull kept."""
    env = {**env, "CAS_HOME": str(home)}
    for ref in refs[:-1]:
        cas("pull", "-q", *flag, ref, env=env)
    return json.loads(cas("pull", "--json", *flag, refs[-1], env=env).stdout)["budget"]


def test_the_same_budget_from_the_file_the_variable_and_the_flag(cas, registry, tmp_path):
    refs = [_push(registry, f"origin{seed}", _image(seed)) for seed in (21, 22, 23)]
    budget = int(max(_image(seed).size for seed in (21, 22, 23)) * 2.4)
    config = tmp_path / "config.toml"
    config.write_text(f"# the build machines' cache\njobs = 2\nmax-size = {budget}\n")

    from_file = _three_pulls(cas, tmp_path / "a", refs, {"CAS_CONFIG": str(config)})
    from_env = _three_pulls(cas, tmp_path / "b", refs, {"CAS_MAX_SIZE": str(budget)})
    from_flag = _three_pulls(cas, tmp_path / "c", refs, {}, "--max-size", str(budget))
    for kept in (from_file, from_env, from_flag):
        assert kept["max_size"] == budget and [i["ref"] for i in kept["images"]] == [refs[0]]
    assert from_file["max_size_from"] == f"{config}:3"
    assert from_env["max_size_from"] == "$CAS_MAX_SIZE"
    assert from_flag["max_size_from"] == "--max-size"

    shown = _config(cas, CAS_CONFIG=str(config))
    assert shown["max-size"] == {"key": "max-size", "value": budget, "origin": "file", "source": f"{config}:3"}
    assert shown["jobs"]["origin"] == "file" and shown["jobs"]["value"] == 2
    assert shown["connections"] == {"key": "connections", "value": 8, "origin": "default", "source": None}
    assert _config(cas, CAS_MAX_SIZE=str(budget))["max-size"] == {
        "key": "max-size",
        "value": budget,
        "origin": "env",
        "source": "CAS_MAX_SIZE",
    }
    over = _config(cas, CAS_CONFIG=str(config), CAS_MAX_SIZE="1GiB")  # the variable beats the file
    assert over["max-size"]["value"] == 1 << 30 and over["max-size"]["source"] == "CAS_MAX_SIZE"
    text = cas("config", env={"CAS_CONFIG": str(config), "CAS_TIMEOUT": "5"}).stdout
    assert f"config file: {config}\n" in text
    assert any(line.split()[:2] == ["timeout", "5"] and line.endswith("$CAS_TIMEOUT") for line in text.splitlines())
    assert any(line.startswith("max-size") and line.endswith(f"{config}:3") for line in text.splitlines())


def test_max_age_from_the_file_the_variable_and_the_flag_each_beating_the_next(cas, registry, tmp_path):
    """An image last used four days ago goes under a max-age of 3d, whichever place says 3d; a 30d
    that a higher place overrides does not keep it."""
    from cas.store import Store

    aged, new = (_push(registry, f"aging{seed}", _image(seed)) for seed in (24, 25))
    three, thirty = tmp_path / "3d.toml", tmp_path / "30d.toml"
    three.write_text('max-age = "3d"\n')
    thirty.write_text('jobs = 2\nmax-age = "30d"\n')
    cases = [
        ({"CAS_CONFIG": str(three)}, [], f"{three}:1"),
        ({"CAS_CONFIG": str(thirty), "CAS_MAX_AGE": "3d"}, [], "$CAS_MAX_AGE"),
        ({"CAS_CONFIG": str(thirty), "CAS_MAX_AGE": "30d"}, ["--max-age", "3d"], "--max-age"),
    ]
    for n, (env, flag, origin) in enumerate(cases):
        home = tmp_path / f"home{n}"
        cas("pull", "-q", aged, env={"CAS_HOME": str(home)})
        store = Store(home)
        store.metadata.touch_refs(store.metadata.ref_records(aged), when=time.time() - 4 * 86400)
        store.close()
        kept = json.loads(cas("pull", "--json", *flag, new, env={**env, "CAS_HOME": str(home)}).stdout)["budget"]
        assert [i["ref"] for i in kept["images"]] == [aged], origin
        assert (kept["max_age_seconds"], kept["max_age_from"], kept["max_size"]) == (3 * 86400, origin, None)
    said = cas("pull", "--max-age", "2d", aged, env={"CAS_HOME": str(tmp_path / "home0")}).stderr  # nothing that old
    assert "evicted" not in said
    shown = _config(cas, CAS_CONFIG=str(thirty), CAS_MAX_AGE="3d")["max-age"]
    assert (shown["value"], shown["origin"], shown["source"]) == (3 * 86400, "env", "CAS_MAX_AGE")
    text = cas("config", env={"CAS_CONFIG": str(thirty)}).stdout
    assert any(line.split()[:2] == ["max-age", "4w2d"] and line.endswith(f"{thirty}:2") for line in text.splitlines())


def test_a_bad_max_age_flag_is_a_usage_error(cas):
    proc = cas("pull", "--max-age", "soon", "x", check=False)
    assert proc.returncode == 2 and "invalid duration 'soon'" in proc.stderr


def test_serve_settings_are_accepted_and_shown(cas, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[serve]\nlisten = "127.0.0.1:5050"\nupstreams = ["docker.io", "ghcr.io"]\n')
    shown = _config(cas, CAS_CONFIG=str(config))
    assert shown["serve.listen"]["value"] == "127.0.0.1:5050" and shown["serve.listen"]["source"] == f"{config}:2"
    assert shown["serve.upstreams"]["value"] == ["docker.io", "ghcr.io"]


def test_the_default_file_is_under_xdg_config_home(cas, tmp_path):
    (tmp_path / "xdg" / "cas").mkdir(parents=True)
    (tmp_path / "xdg" / "cas" / "config.toml").write_text('max-age = "7d"\n')
    shown = _config(cas, CAS_CONFIG="", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert shown["max-age"]["value"] == 7 * 86400 and shown["max-age"]["origin"] == "file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs = 2\nmax-size = 20GiB\n", ":2: not valid TOML"),  # unquoted
        ('jobs = 2\n\nmax_size = "20GiB"\n', ":3: unknown key 'max_size'"),
        ('[serve]\nlisten = "x"\nupstream = []\n', ":3: unknown key 'serve.upstream'"),
        ("connections = 100\n", ":1: connections: 100 is not a whole number from 1 to 64"),
        ('max-size = "lots"\n', ":1: max-size: invalid size 'lots'"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_line_and_every_command_refuses_it(
    cas, registry, tmp_path, text, message
):
    config = tmp_path / "config.toml"
    config.write_text(text)
    for args in (["pull", f"{registry.host}/nothing:1"], ["images"], ["config"]):
        proc = cas(*args, env={"CAS_CONFIG": str(config)}, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode != 0 and len(errors) == 1 and errors[0].startswith(f"error: {config}{message}")
        assert "Traceback" not in proc.stderr
    assert registry.requests() == []  # refused before anything ran


def test_cas_jobs_abc_names_the_variable_in_plain_words(cas):
    """Not click's "'abc' is not a valid int range"."""
    proc = cas("pull", "x", env={"CAS_JOBS": "abc"}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        "error: invalid value in $CAS_JOBS: 'abc' is not a whole number from 1 to 32 (blobs transferred at once)"
    )


def test_pull_options_take_jobs_connections_timeout_and_min_rate_from_the_file(tmp_path, monkeypatch):
    """`cas export --pull` has no --jobs: what it pulls with comes from the same settings."""
    import cas.settings
    from cli import options

    config = tmp_path / "config.toml"
    config.write_text("jobs = 3\nconnections = 5\ntimeout = 7.5\nmin-rate = 0\n")
    monkeypatch.setenv("CAS_CONFIG", str(config))
    monkeypatch.setenv("CAS_CONNECTIONS", "6")
    monkeypatch.setattr(cas.settings, "_current", None)
    built = options.pull_options(
        None, insecure=False, username=None, password_stdin=False, lock_timeout=1.0, quiet=True, as_json=True
    )
    assert (built.jobs, built.connections, built.timeout, built.min_rate) == (3, 6, 7.5, 0)
    flagged = options.pull_options(
        None, jobs=9, insecure=False, username=None, password_stdin=False, lock_timeout=1.0, quiet=True, as_json=True
    )
    assert flagged.jobs == 9


def test_mirror_files_named_in_the_config_file_are_read_by_pull_and_push(cas, registry, test_images, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nprefix = "{registry.host}/app"\nlocation = "{registry.host}/app"\nblocked = true\n')
    config = tmp_path / "config.toml"
    config.write_text(f'registries-conf = "{conf}"\n')
    env = {"CAS_CONFIG": str(config)}
    ref = test_images.ref(registry, "app")
    base = test_images.ref(registry, "base")
    cas("pull", "-q", base)  # not blocked: only {host}/app is
    registry.mark()
    for args, name in ((["pull", ref], "app"), (["push", base, f"{registry.host}/app/copy:1"], "app/copy")):
        refused = cas(*args, env=env, check=False)
        assert refused.returncode != 0 and f"is blocked for {registry.host}/{name} by {conf}" in refused.stderr
    assert registry.requests() == []
    config.write_text(f'jobs = 1\nhosts-dir = ["{tmp_path / "nowhere"}"]\n')
    missing = cas("pull", ref, env=env, check=False)
    assert f"error: {config}:2: hosts-dir: {tmp_path / 'nowhere'} does not exist" in missing.stderr
