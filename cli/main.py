"""The typer app. Commands only parse, call cas, and render; CasError becomes one line and an exit code."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cas.errors import CasError
from cli import output

app = typer.Typer(
    name="cas",
    help="A content-addressed cache for container images: pull only what is missing, export complete archives.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    """A content-addressed cache for container images: pull only what is missing, export complete archives.

    The store lives in $CAS_HOME (default: ${XDG_CACHE_HOME:-~/.cache}/cas).
    """


def _register() -> None:
    from cli import images, inspect, pull

    app.command("pull")(pull.pull)
    app.command("images")(images.images)
    app.command("inspect")(inspect.inspect)

    from cli import du, prune, rm, verify

    app.command("rm")(rm.rm)
    app.command("du")(du.du)
    app.command("prune")(prune.prune)
    app.command("verify")(verify.verify)

    from cli import export

    app.command("export")(export.export)


_register()


def main() -> None:
    try:
        app()
    except CasError as exc:
        output.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        output.error("interrupted", "the store is consistent; run the command again to finish")
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)


if __name__ == "__main__":
    main()
