"""Tab completion for bash, zsh and fish: subcommands, options, and cached references.

The shell scripts below run ``cas`` with ``_CAS_COMPLETE=<shell>`` and ``COMP_LINE`` (the
command line up to the cursor); ``cli.main`` answers before running any command, so a
completion imports neither httpx nor rich nor the index (cached references come from the
store's index.json). Candidates come from the click command tree typer builds, so a new
command or option completes with no change here.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from cas.errors import UsageError

REF_COMMANDS = frozenset({"export", "inspect", "rm", "push"})  # commands whose arguments are cached references

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
    """(value, help) pairs for the word being typed after ``args`` (click objects, duck-typed)."""
    command, expecting = root, None
    for arg in args:
        if expecting is not None:
            expecting = None
        elif arg.startswith("-"):
            option = _option(command, arg)
            if option is not None and not option.is_flag and not option.count:
                expecting = option
        elif hasattr(command, "commands") and arg in command.commands:
            command = command.commands[arg]
    if expecting is not None:
        choices = getattr(expecting.type, "choices", None) or ()
        return [(str(c), "") for c in choices if str(c).startswith(incomplete)]
    if incomplete.startswith("-"):
        return [
            (name, _first_line(param.help))
            for param in command.params
            if not getattr(param, "hidden", False) and hasattr(param, "opts")
            for name in (*param.opts, *param.secondary_opts)
            if name.startswith(incomplete) and param.param_type_name == "option"
        ]
    if hasattr(command, "commands"):
        return [
            (name, _first_line(sub.short_help or sub.help))
            for name, sub in command.commands.items()
            if name.startswith(incomplete) and not sub.hidden
        ]
    if command.name in REF_COMMANDS:
        from cas.store import layout_refs

        return [(ref, "cached") for ref in layout_refs() if ref.startswith(incomplete)]
    return []


def _option(command: object, name: str) -> object | None:
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


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
