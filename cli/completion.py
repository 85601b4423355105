"""Tab completion for bash, zsh and fish: subcommands, options, choices and cached references.

What click already answers, click answers: the subcommands and options (``Command.shell_complete``)
and an option's or argument's values (``Parameter.shell_complete``: a Choice's values, or the
``autocompletion=`` hook the REF arguments declare, ``cached_refs``). Kept here, each because
typer cannot: the shell scripts and their ``_CAS_COMPLETE=<shell>`` + ``COMP_LINE`` protocol
(typer's scripts hand bash the whole ``host:port/name`` word, which bash splits at ':', and need
shellingham to guess the shell); ``main`` answering before any command module's imports, so a
completion imports neither httpx nor rich nor the index (cached references come from the
store's index.json); and ``--install-completion`` writing where each shell looks, once.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from cas.errors import UsageError

_BASH = """\
_cas_completion() {
    local IFS=$'\\n'
    COMPREPLY=($(COMP_LINE="${COMP_LINE:0:$COMP_POINT}" _CAS_COMPLETE=bash "${COMP_WORDS[0]}" 2>/dev/null))
    return 0
}
complete -o default -F _cas_completion cas
"""

_ZSH = """\
#compdef cas
_cas() {
    local -a items
    items=("${(@f)$(COMP_LINE="${(j: :)words[1,CURRENT]}" _CAS_COMPLETE=zsh "${words[1]}" 2>/dev/null)}")
    if [[ -n "${items[1]}" ]]; then
        _describe 'cas' items
    else
        _files
    fi
}
if [[ "${zsh_eval_context[-1]}" == loadautofunc ]]; then
    _cas "$@"
else
    compdef _cas cas
fi
"""

_FISH = """\
function __cas_complete
    env COMP_LINE=(commandline -cp) _CAS_COMPLETE=fish cas 2>/dev/null
end
complete -c cas -a '(__cas_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def complete(app: object, shell: str) -> int:
    """Print the candidates for ``$COMP_LINE`` in ``shell``'s format; the exit code for the shell."""
    import typer.main

    line = os.environ.get("COMP_LINE", "")
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote
        words = line.split()
    incomplete = words.pop() if words and not line[-1:].isspace() else ""
    items = candidates(typer.main.get_command(app), words[1:], incomplete)
    print("\n".join(_format(shell, value, help_text, incomplete) for value, help_text in items))
    return 0


def candidates(root: object, args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """(value, help) pairs for the word being typed after ``args``, as click's own hooks give them."""
    import typer

    command, expecting, position = _position(root, args)
    ctx = typer.Context(command, info_name=command.name, resilient_parsing=True)  # nothing typed is run
    if expecting is not None:
        items = expecting.shell_complete(ctx, incomplete)
    elif incomplete.startswith("-") or hasattr(command, "commands"):
        items = command.shell_complete(ctx, incomplete)
    else:
        arguments = [param for param in command.params if param.param_type_name == "argument"]
        items = arguments[min(position, len(arguments) - 1)].shell_complete(ctx, incomplete) if arguments else []
    return [(item.value, (item.help or "").strip().split("\n", 1)[0]) for item in items]


def _position(root: object, args: list[str]) -> tuple[object, object | None, int]:
    """The (sub)command ``args`` reach, the option whose value comes next, and how many arguments were given."""
    command, expecting, position = root, None, 0
    for arg in args:
        if expecting is not None:
            expecting = None
        elif arg.startswith("-"):
            option = next((p for p in command.params if arg in (*getattr(p, "opts", ()), *p.secondary_opts)), None)
            if option is not None and not option.is_flag and not option.count:
                expecting = option
        elif hasattr(command, "commands") and arg in command.commands:
            command = command.commands[arg]
        else:
            position += 1
    return command, expecting, position


def cached_refs() -> list[tuple[str, str]]:
    """The REF arguments' ``autocompletion=``: cached references, read from the store's index.json alone."""
    from cas.store import layout_refs

    return [(ref, "cached") for ref in layout_refs()]  # typer keeps those that start with ``incomplete``


def _format(shell: str, value: str, help_text: str, incomplete: str) -> str:
    if shell == "zsh":
        return value.replace(":", r"\:") + (f":{help_text}" if help_text else "")
    if shell == "fish":
        return value + (f"\t{help_text}" if help_text else "")
    # bash splits words at ':' (COMP_WORDBREAKS): reply with what follows the last ':' typed
    cut = incomplete.rfind(":") + 1
    return value[cut:]


def run_option(action: str, shell: str) -> None:
    """``--show-completion [SHELL]`` prints the script; ``--install-completion [SHELL]`` installs it."""
    shell = shell or Path(os.environ.get("SHELL", "")).name
    if shell not in SCRIPTS:
        raise UsageError(
            f"cannot complete for shell {shell or '(unknown: $SHELL is not set)'!r}",
            hint=f"cas completes in bash, zsh and fish: --{action}-completion bash, zsh or fish",
        )
    if action == "show":
        print(SCRIPTS[shell], end="")
        return
    path, rc_note = install(shell)
    print(f"{shell} completion installed in {path}{rc_note}; open a new shell to use it")


def install(shell: str) -> tuple[Path, str]:
    """Write the script where ``shell`` finds it; for bash and zsh, make the rc file load it (once)."""
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    if shell == "bash":
        path = data / "bash-completion" / "completions" / "cas"
        rc, line = home / ".bashrc", f"[ -f '{path}' ] && . '{path}'  # cas completion"
    elif shell == "zsh":
        path = home / ".zfunc" / "_cas"
        rc, line = home / ".zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit  # cas completion"
    else:
        path, rc, line = config / "fish" / "completions" / "cas.fish", None, ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPTS[shell])
    if rc is None:
        return path, ""
    existing = rc.read_text() if rc.exists() else ""
    if line not in existing:
        with rc.open("a") as f:
            f.write(("" if existing.endswith("\n") or not existing else "\n") + line + "\n")
    return path, f" (loaded from {rc})"
