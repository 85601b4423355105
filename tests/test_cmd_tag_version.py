"""`cas version`, `cas help` and `cas tag`, run as users run them."""

from __future__ import annotations

import json


def test_version_names_cas_python_and_each_dependency(cas):
    out = json.loads(cas("version", "--json").stdout)
    assert out["command"] == "version" and out["cas"] and out["python"].count(".") == 2
    assert {"httpx", "typer", "diskcache", "blake3", "rich"} <= set(out["dependencies"])
    assert all(isinstance(v, str) and v[0].isdigit() for v in out["dependencies"].values())
    text = cas("version").stdout.splitlines()
    assert text[0] == f"cas {out['cas']}" and text[1].startswith(f"Python {out['python']}")
    assert f"httpx {out['dependencies']['httpx']}" in text


def test_help_command_prints_the_commands_help_and_refuses_an_unknown_one(cas):
    assert cas("help", "pull").stdout == cas("pull", "--help").stdout
    listing = cas("help").stdout
    assert "pull" in listing and "tag" in listing and "version" in listing
    bad = cas("help", "pul", check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "error: no such command: 'pul'",
        "hint: did you mean `cas help pull`? `cas help` lists every command",
    ]
    every = cas("help", "--all").stdout
    assert cas("tag", "--help").stdout in every and cas("ls", "--help").stdout in every
    import cli.main

    assert every.count("Usage: cas ") == 1 + len(cli.main.COMMANDS)  # cas itself, then each command
    far = cas("help", "zzz", check=False)
    assert far.returncode == 2 and far.stderr.splitlines()[1] == "hint: `cas help` lists every command"


def test_tag_then_export_loads_the_new_name_into_an_empty_docker(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    mark = registry.mark()
    new = f"{registry.host}/renamed/app:release"
    out = json.loads(cas("tag", "--json", app, new).stdout)
    assert out["images"][0]["ref"] == new and out["images"][0]["digest"] == test_images.app.digest
    assert registry.requests(mark) == []  # records only
    images = {row["ref"] for row in json.loads(cas("images", "--json").stdout)["images"]}
    assert {app, new} <= images

    archive = tmp_path / "renamed.tar"
    cas("export", new, "-o", archive)
    loaded = clean_dockerd.load(archive).stdout
    assert f"Loaded image: {new}" in loaded and app not in loaded
    assert clean_dockerd.run(new).stdout == "hello from app\n"

    cas("rm", new)  # only the new name goes
    images = {row["ref"] for row in json.loads(cas("images", "--json").stdout)["images"]}
    assert app in images and new not in images


def test_tag_of_a_multi_platform_image_names_every_cached_platform(cas, registry, test_images):
    multi = test_images.ref(registry, "multi")
    cas("pull", "--platform", "linux/amd64,linux/arm64", multi)
    new = f"{registry.host}/other/multi:v2"
    out = json.loads(cas("tag", "--json", multi, new).stdout)
    assert sorted(row["platform"] for row in out["images"]) == ["linux/amd64", "linux/arm64/v8"]
    assert {row["digest"] for row in out["images"]} == {test_images.multi.digest}


def test_tag_errors_are_one_line_with_a_hint(cas, registry):
    missing = cas("tag", f"{registry.host}/nothing:1", "x:1", check=False)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"error: not in the cache: {registry.host}/nothing:1",
        f"hint: run `cas pull {registry.host}/nothing:1` first",
    ]
    usage = cas("tag", "only-one", check=False)
    assert usage.returncode == 2 and usage.stderr.startswith("error: missing argument NEW\nhint: ")
    digest = cas("tag", "a:1", "b@sha256:" + "0" * 64, check=False)
    assert digest.returncode == 2 and "a new name needs a tag" in digest.stderr


def test_new_commands_complete_their_options_and_cached_references(cas, registry, test_images):
    def complete(line: str) -> list[str]:
        return cas(env={"_CAS_COMPLETE": "bash", "COMP_LINE": line}).stdout.splitlines()

    assert {"copy", "ls", "tag", "version"} <= set(complete("cas "))
    assert complete("cas ls --page") == ["--page-size"]
    assert complete("cas inspect --rem") == ["--remote"]
    assert complete("cas pull --lo") == ["--lock", "--lock-timeout"]
    assert "--all-platforms" in complete("cas copy --all")
    app = test_images.ref(registry, "app")
    cas("pull", "-q", app)
    cached = complete(f"cas inspect {app[:-3]}")  # as bash wants it (the part after the last ':')
    assert cached == ["latest"]
    assert complete(f"cas tag {app[:-3]}") == cached and complete(f"cas copy {app[:-3]}") == cached
