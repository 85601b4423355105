"""cas version and cas help [COMMAND]: the two words docker and git users type before any flag."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def version(as_json: options.Json = False) -> None:
    """Print the versions of cas, Python and each library cas runs on (for bug reports).

    \b
    Examples:
      cas version
      cas version --json | jq -r .cas
    """
    from cas import __version__

    found = versions()
    if as_json:
        output.emit_json("version", {"cas": __version__, **found})
        return
    print(f"cas {__version__}")
    print(f"Python {found['python']} ({found['implementation']})")
    for name, text in found["dependencies"].items():
        print(f"{name} {text or '(not installed)'}")


def versions() -> dict:
    """Python's version and each declared dependency's installed version (None when it is missing)."""
    import platform
    import re
    from importlib import metadata

    try:
        declared = metadata.requires("cas") or []
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        declared = []
    deps: dict[str, str | None] = {}
    for requirement in declared:
        if "extra ==" in requirement:  # the test extras are not what cas runs on
            continue
        name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            deps[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "dependencies": deps,
    }


def help_(
    ctx: typer.Context,
    command: Annotated[
        str | None, typer.Argument(metavar="[COMMAND]", help="The command to explain (default: list every command).")
    ] = None,
) -> None:
    """Show the help of cas or of one COMMAND, as `cas COMMAND --help` does.

    \b
    Examples:
      cas help
      cas help pull
    """
    from cas.errors import UsageError

    ctx = ctx.find_root()
    group = ctx.command
    if command is None:
        print(group.get_help(ctx))
        return
    sub = group.get_command(ctx, command)  # type: ignore[attr-defined]
    if sub is None:
        names = ", ".join(group.list_commands(ctx))  # type: ignore[attr-defined]
        raise UsageError(f"no such command: {command!r}", hint=f"the commands are: {names}")
    with typer.Context(sub, info_name=command, parent=ctx) as sub_ctx:
        print(sub.get_help(sub_ctx))
