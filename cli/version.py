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
    every: Annotated[
        bool, typer.Option("--all", "-a", help="Print the help of every command, one after another (as `git help -a`).")
    ] = False,
) -> None:
    """Show the help of cas or of one COMMAND, as `cas COMMAND --help` does.

    \b
    Examples:
      cas help
      cas help pull
      cas help --all | less
    """
    from cas.errors import UsageError

    ctx = ctx.find_root()
    group = ctx.command
    if every:
        if command is not None:
            raise UsageError("--all explains every command", hint="drop COMMAND, or drop --all")
        names = group.list_commands(ctx)  # type: ignore[attr-defined]
        print("\n\n".join([group.get_help(ctx), *(_help_of(ctx, group, name) for name in names)]))
        return
    if command is None:
        print(group.get_help(ctx))
        return
    sub = group.get_command(ctx, command)  # type: ignore[attr-defined]
    if sub is None:
        import difflib

        near = difflib.get_close_matches(command, group.list_commands(ctx), n=1)  # type: ignore[attr-defined]
        also = f"did you mean `cas help {near[0]}`? " if near else ""
        raise UsageError(f"no such command: {command!r}", hint=f"{also}`cas help` lists every command")
    print(_help_of(ctx, group, command))


def _help_of(ctx: typer.Context, group, name: str) -> str:
    sub = group.get_command(ctx, name)
    with typer.Context(sub, info_name=name, parent=ctx) as sub_ctx:
        return sub.get_help(sub_ctx)
