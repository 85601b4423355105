"""Usage mistakes, help and shell completion: how `cas` talks before it does anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("pull", "push", "export", "import", "images", "inspect", "rm", "du", "prune", "verify", "login", "logout")


def _one_line_usage_error(proc) -> str:
    """The error message, after checking the shape: exit 2, `error:` then `hint:`, nothing else."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), proc.stderr
    assert proc.stdout == ""
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_of_every_command_is_one_line_and_exit_2(cas, command):
    proc = cas(command, "--no-such-option", check=False)
    assert _one_line_usage_error(proc) == "no such option: --no-such-option"
    assert proc.stderr.splitlines()[1] == f"hint: see `cas {command} --help`"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pull"], "missing argument REF..."),
        (["export", "x"], "missing option --output"),
        (["pull", "--jobs", "0", "x"], "invalid value for --jobs: 0 is not in the range 1<=x<=32"),
        (["pull", "--platform", "linux", "x"], "invalid value for --platform: invalid platform 'linux'"),
        (["export", "-o", "x.tar", "--format", "zip", "x"], "invalid value for --format: 'zip' is not one of"),
        (["prune", "--keep-storage", "10XB"], "invalid value for --keep-storage: invalid size '10XB'"),
        (["prune", "--older-than", "soon"], "invalid value for --older-than: invalid duration 'soon'"),
        (["verify", "--lock-timeout", "-1"], "invalid value for --lock-timeout"),
        (["pull", "-u", "someone", "x"], "--username and --password-stdin go together"),
        (["inspect", "x", "--raw", "--config"], "--raw, --config and --json each print one thing"),
        (["bogus"], "no such command 'bogus'"),
    ],
)
def test_bad_values_and_combinations_are_one_line_and_exit_2(cas, args, message):
    proc = cas(*args, check=False, input="")
    assert _one_line_usage_error(proc).startswith(message)


@pytest.mark.parametrize(
    ("env", "args", "variable"),
    [
        ({"CAS_PLATFORM": "linux"}, ["pull", "x"], "CAS_PLATFORM"),
        ({"DOCKER_DEFAULT_PLATFORM": "linux"}, ["export", "x", "-o", "x.tar"], "DOCKER_DEFAULT_PLATFORM"),
        ({"CAS_JOBS": "many"}, ["pull", "x"], "CAS_JOBS"),
        ({"CAS_LOCK_TIMEOUT": "soon"}, ["prune"], "CAS_LOCK_TIMEOUT"),
    ],
)
def test_a_bad_environment_variable_is_named(cas, env, args, variable):
    proc = cas(*args, env=env, check=False)
    message = _one_line_usage_error(proc)
    assert message.startswith(f"invalid value in ${variable}: ")
    assert f"fix or unset {variable}" in proc.stderr


def test_plain_cas_prints_help_and_succeeds(cas):
    proc = cas()
    assert proc.stdout.startswith("Usage: cas [OPTIONS] COMMAND") and proc.stderr == ""


def test_top_level_help_has_whole_summaries(cas):
    import cli.main  # the docstrings are the source of the summaries

    top = " ".join(cas("--help").stdout.split())  # undo the wrapping
    assert "..." not in top.split("Commands:")[1]
    commands = cli.main.register().registered_commands
    assert [c.name for c in commands] == list(cli.main.COMMANDS)
    for command in commands:
        summary = " ".join(command.callback.__doc__.split("\n\n", 1)[0].split())
        assert f"{command.name} {summary}" in top


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_a_real_usage_line_and_examples(cas, command):
    text = cas(command, "--help").stdout
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: cas {command} [OPTIONS]") and "{" not in usage, usage
    examples = text.split("Examples:", 1)[1]
    assert re.search(rf"^ +(echo .*\| )?cas {command} ", examples, re.MULTILINE), examples
    assert not re.search(r"<(str|int|float)[^>]*>", text), "typer's type metavars leak into the help"


def test_metavars_say_what_is_expected(cas):
    pull = cas("pull", "--help").stdout
    for metavar in ("REF...", "--platform OS/ARCH[/VARIANT]", "--jobs N", "--lock-timeout SECONDS"):
        assert metavar in pull
    prune = cas("prune", "--help").stdout
    assert "--keep-storage SIZE" in prune and "--older-than DURATION" in prune
    assert "--output PATH" in cas("export", "--help").stdout


# completion --------------------------------------------------------------


def _complete(cas, shell: str, line: str) -> list[str]:
    return cas(env={"_CAS_COMPLETE": shell, "COMP_LINE": line}).stdout.splitlines()


def test_completion_offers_commands_options_and_choices(cas):
    assert {"pull", "export", "images", "prune", "login"} <= set(_complete(cas, "bash", "cas "))
    assert _complete(cas, "bash", "cas ex") == ["export"]
    assert "--keep-storage" in _complete(cas, "bash", "cas prune --k")
    assert _complete(cas, "bash", "cas export -o x.tar --format oci-") == ["oci-archive", "oci-dir"]
    zsh = _complete(cas, "zsh", "cas prune --dry")
    assert zsh == ["--dry-run:Print what would go and how many bytes; change nothing."]
    fish = _complete(cas, "fish", "cas pul")
    assert fish[0].startswith("pull\tPull images")


def _shell_env(cas_home: Path, tmp_path: Path) -> dict[str, str]:
    """`cas` on PATH, as an installed one would be, and the test's store."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cas").write_text(f'#!/bin/sh\ncd {REPO_ROOT} && exec {sys.executable} -m cli "$@"\n')
    (bin_dir / "cas").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CAS_HOME": str(cas_home)}


def _run_shell(argv: list[str], env: dict[str, str]) -> list[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"{argv[0]} failed (scripts/install installs it): {proc.stderr}"
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_completes_cached_references_in_a_real_bash(cas, cas_home, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", "-q", base, app)
    script = tmp_path / "cas.bash"
    script.write_text(cas("--show-completion", "bash").stdout)
    env = _shell_env(cas_home, tmp_path)

    def complete(line: str) -> list[str]:
        words = line.split(" ")  # what bash would hand the function, COMP_WORDBREAKS aside
        program = f"""
            source {script}
            complete -p cas >/dev/null || exit 3
            COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
            COMP_WORDS=({" ".join(f"'{w}'" for w in words)}); COMP_CWORD={len(words) - 1}
            _cas_completion
            printf '%s\\n' "${{COMPREPLY[@]}}"
        """
        return _run_shell(["bash", "--norc", "-c", program], env)

    for command in ("export", "inspect", "rm"):
        assert complete(f"cas {command} ") == sorted([base, app]), command
    assert complete(f"cas export {registry.host}/a") == [app.split(":", 1)[1]]  # bash replaces the word after ':'
    assert complete("cas du ") == []  # du takes no reference


def test_fish_and_zsh_completion_scripts_complete_cached_references(cas, cas_home, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", "-q", base, app)
    env = _shell_env(cas_home, tmp_path)
    fish_script, zsh_script = tmp_path / "cas.fish", tmp_path / "_cas"
    fish_script.write_text(cas("--show-completion", "fish").stdout)
    zsh_script.write_text(cas("--show-completion", "zsh").stdout)

    fish = _run_shell(
        ["fish", "--no-config", "-c", f"source {fish_script}; complete -C 'cas rm {registry.host}/'"], env
    )
    assert [line.split("\t")[0] for line in fish] == sorted([base, app])
    assert _run_shell(["fish", "--no-config", "-c", f"source {fish_script}; complete -C 'cas ex'"], env) == [
        "export\tExport cached images as one archive that docker load, podman load and skopeo accept."
    ]

    # zsh's completion system needs a terminal: its two entry points are stubbed to print what they get
    stubs = 'compdef() { :; }; _describe() { print -rl -- "${(@P)2}"; }; _files() { print FILES; }'
    zsh = f"{stubs}; source {zsh_script}; words=(cas inspect ''); CURRENT=3; _cas"
    expected = [ref.replace(":", "\\:") + ":cached" for ref in sorted([base, app])]
    assert _run_shell(["zsh", "-f", "-c", zsh], env) == expected
    zsh_du = f"{stubs}; source {zsh_script}; words=(cas du ''); CURRENT=3; _cas"
    assert _run_shell(["zsh", "-f", "-c", zsh_du], env) == ["FILES"]  # nothing of ours: the shell's own files


def test_completion_imports_neither_httpx_nor_rich_nor_the_index(cas, registry, test_images):
    cas("pull", "-q", test_images.ref(registry, "base"))
    env = {"_CAS_COMPLETE": "zsh", "COMP_LINE": "cas export ", "PYTHONPROFILEIMPORTTIME": "1"}
    proc = cas(env=env)
    assert test_images.ref(registry, "base").replace(":", r"\:") in proc.stdout
    modules = _imported(proc)
    assert "typer" in modules  # the log was read
    assert not {"httpx", "rich", "diskcache", "sqlite3"} & modules


def _imported(proc) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", proc.stderr, re.MULTILINE))


def test_a_command_loads_only_its_own_module_and_a_typo_still_gets_a_suggestion(cas, cas_home):
    probe = (  # cli.main.main() ends the process through _exit: have it report the loaded modules instead
        "import sys\n"
        "import cli.main as m\n"
        "m._exit = lambda code: print(code, sorted(k for k in sys.modules if k.startswith('cli.')))\n"
        "sys.argv = ['cas', 'images', '-q']\n"
        "m.main()\n"
    )
    env = {**os.environ, "CAS_HOME": str(cas_home)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, env=env, check=True
    )
    code, loaded = out.stdout.strip().split(" ", 1)
    assert code in ("0", "None") and "'cli.images'" in loaded  # None: the command returned normally
    assert not {"cli.pull", "cli.push", "cli.export", "cli.verify"} & set(re.findall(r"'([\w.]+)'", loaded))
    wrong = cas("imagse", check=False)
    assert wrong.returncode == 2 and "imagse" in wrong.stderr and "images" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize(
    ("shell", "installed", "rc"),
    [
        ("bash", ".local/share/bash-completion/completions/cas", ".bashrc"),
        ("zsh", ".zfunc/_cas", ".zshrc"),
        ("fish", ".config/fish/completions/cas.fish", None),
    ],
)
def test_install_completion_writes_the_script_once(cas, tmp_path, shell, installed, rc):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": "", "SHELL": f"/bin/{shell}"}
    for _ in range(2):
        proc = cas("--install-completion", env=env)
        assert f"{shell} completion installed in {home / installed}" in proc.stdout
    assert (home / installed).read_text() == cas("--show-completion", shell).stdout
    if rc is not None:
        assert (home / rc).read_text().count("cas completion") == 1
    unknown = cas("--install-completion", env={**env, "SHELL": "/bin/tcsh"}, check=False)
    assert unknown.returncode == 2 and "cannot complete for shell 'tcsh'" in unknown.stderr
