"""The typer app. Commands only parse, call cas, and render; CasError becomes one line and an exit code."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Annotated

import typer
import typer.core

from cas.errors import CasError, Interrupted
from cli import options, output

app = typer.Typer(
    name="cas",
    help="A content-addressed cache for container images: pull only what is missing, export complete archives.\n\n"
    "The store lives in $CAS_HOME (default: ${XDG_CACHE_HOME:-~/.cache}/cas).",
    add_completion=False,  # cli.completion: no rich import, and an explicit SHELL argument
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say OS/ARCH[/VARIANT]: brackets are not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from cas import __version__

        print(f"cas {__version__}")
        raise typer.Exit()


def _completion_option(action: str, help_text: str) -> typer.models.OptionInfo:
    """``--install-completion`` / ``--show-completion``: run at parse time, then exit."""

    def callback(shell: str | None) -> None:
        if shell is not None:
            from cli import completion

            completion.run_option(action, shell)
            raise typer.Exit()

    flag = f"--{action}-completion"
    return typer.Option(flag, metavar="[bash|zsh|fish]", callback=callback, is_eager=True, help=help_text)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: options.Verbose = False,
    install_completion: Annotated[
        str | None, _completion_option("install", "Install tab completion for SHELL (default: $SHELL), say where.")
    ] = None,
    show_completion: Annotated[
        str | None, _completion_option("show", "Print the completion script for SHELL (default: $SHELL).")
    ] = None,
) -> None:
    """Options that come before the command."""
    from cas.settings import current

    current()  # a malformed config file stops every command, not only those that read a setting


class _Command(typer.core.TyperCommand):
    """click's Command, through typer's ``cls=`` hook, where cas says things its own way:

    - usage lines as users write them: `cas pull [OPTIONS] REF...` (typer braces required arguments);
    - with --json, a failure still prints the command's one JSON object (``output.emit_failure``);
      the error line on stderr is printed by ``main``, as for every failure;
    - Ctrl-C in a command is ``Interrupted``, said in the one error format.
    """

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        return [piece.strip("{}") for piece in super().collect_usage_pieces(ctx)]

    def make_context(self, info_name: str | None, args: list[str], *rest: object, **extra: object) -> typer.Context:
        typed = args[: args.index("--")] if "--" in args else list(args)  # the parser consumes ``args``
        try:
            return super().make_context(info_name, args, *rest, **extra)
        except typer.TyperException as exc:  # a usage mistake: only the words typed tell whether --json was asked
            from cli import usage_errors

            if "--json" in typed:
                code = getattr(exc, "exit_code", usage_errors.USAGE_EXIT)
                output.emit_failure(self.name or "", *usage_errors.describe(exc), code, {})
            raise

    def invoke(self, ctx: typer.Context) -> object:
        try:
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:  # click would print a blank line and a bare "Aborted!": say what happened
                raise Interrupted() from None
        except CasError as exc:
            if ctx.params.get("as_json"):
                output.emit_failure(
                    self.name or "", exc.message, exc.hint, exc.exit_code, ctx.meta.get(output.PARTIAL, {})
                )
            raise


# Each command's module and function, in the order `cas --help` lists them.
COMMANDS = {
    "pull": ("pull", "pull"),
    "push": ("push", "push"),
    "copy": ("copy", "copy"),
    "export": ("export", "export"),
    "import": ("import_", "import_"),
    "ls": ("ls", "ls"),
    "images": ("images", "images"),
    "inspect": ("inspect", "inspect"),
    "tag": ("tag", "tag"),
    "rm": ("rm", "rm"),
    "du": ("du", "du"),
    "prune": ("prune", "prune"),
    "verify": ("verify", "verify"),
    "stats": ("stats", "stats"),
    "config": ("config", "config"),
    "login": ("login", "login"),
    "logout": ("login", "logout"),
    "serve": ("serve", "serve"),
    "version": ("version", "version"),
    "help": ("version", "help_"),
}
_registered: set[str] = set()


def register(only: str | None = None) -> typer.Typer:
    """Add the commands to ``app`` (only ``only`` when given), each once; returns ``app``.

    Running one command needs only that one: typer inspects every registered function's
    signature on each start, and the commands' modules import more (~15 ms for all twelve).
    Help, completion and a mistyped command (click suggests the nearest) get all of them.
    """
    for name, (module, function) in COMMANDS.items():
        if name in _registered or only not in (None, name):
            continue
        command = getattr(importlib.import_module(f"cli.{module}"), function)
        summary = " ".join((command.__doc__ or "").split("\n\n", 1)[0].split())  # whole, never cut at 45 characters
        app.command(name, cls=_Command, short_help=summary)(command)
        _registered.add(name)
    return app


def main() -> None:
    # SIGTERM unwinds like Ctrl-C: temp files are removed, partial downloads kept for resuming.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.environ.get("_CAS_COMPLETE"):  # a shell asking for completions: answered without the commands' imports
        from cli import completion

        _exit(completion.complete(register(), os.environ["_CAS_COMPLETE"]))
    args = sys.argv[1:] or ["--help"]  # plain `cas`: the help is the answer, exit 0 (click's no_args_is_help exits 2)
    named = next((arg for arg in args if not arg.startswith("-")), None)  # root options take no value
    register(named if named in COMMANDS and named != "help" else None)  # help explains them all
    if args and args[-1] in ("--install-completion", "--show-completion"):
        args.append("")  # the shell is optional (typer has no optional option values): "" means $SHELL's
    try:
        code: object = app(args, prog_name="cas", standalone_mode=False)  # click's own error printing is replaced below
    except SystemExit as exc:
        code = exc.code
    except CasError as exc:
        output.error(exc.message, exc.hint)
        code = exc.exit_code
    except typer.TyperException as exc:  # click's errors: usage mistakes (exit 2) and a few others
        code = _click_error(exc)
    except typer.Abort:  # EOF or Ctrl-C at a prompt
        output.error(Interrupted().message, Interrupted().hint)
        code = Interrupted.exit_code
    except BrokenPipeError:
        code = 141
    _exit(code)


def _click_error(exc: Exception) -> int:
    from cli import usage_errors

    output.error(*usage_errors.describe(exc))
    return getattr(exc, "exit_code", usage_errors.USAGE_EXIT)


def _exit(code: object) -> None:
    """Exit without the interpreter's teardown, which costs ~20 ms of unloading modules.

    By now every command has committed, fsynced and closed what it wrote; the store is
    built to survive a kill at any moment, and this is gentler than one.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 141
    os._exit(code)


if __name__ == "__main__":
    main()
