"""The typer app. Commands only parse, call cas, and render; CasError becomes one line and an exit code."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from cas.errors import CasError, Interrupted
from cli import output

app = typer.Typer(
    name="cas",
    help="A content-addressed cache for container images: pull only what is missing, export complete archives.\n\n"
    "The store lives in $CAS_HOME (default: ${XDG_CACHE_HOME:-~/.cache}/cas).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say OS/ARCH[/VARIANT]: brackets are not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from cas import __version__

        print(f"cas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options that come before the command."""


def _interruptible(command: Callable) -> Callable:
    """Typer turns Ctrl-C into a silent exit 130; we say what happened instead."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted() from None

    return run


def _register() -> None:
    from cli import du, export, images, import_, inspect, prune, pull, push, rm, verify

    for name, command in (
        ("pull", pull.pull),
        ("push", push.push),
        ("export", export.export),
        ("import", import_.import_),
        ("images", images.images),
        ("inspect", inspect.inspect),
        ("rm", rm.rm),
        ("du", du.du),
        ("prune", prune.prune),
        ("verify", verify.verify),
    ):
        app.command(name)(_interruptible(command))


_register()


def main() -> None:
    # SIGTERM unwinds like Ctrl-C: temp files are removed, partial downloads kept for resuming.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        app()
        code: object = 0
    except SystemExit as exc:  # typer ends every run this way
        code = exc.code
    except CasError as exc:
        output.error(exc.message, exc.hint)
        code = exc.exit_code
    except BrokenPipeError:
        code = 141
    _exit(code)


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
