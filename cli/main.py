"""The typer app. Commands only parse, call cas, and render; CasError becomes one line and an exit code."""

from __future__ import annotations

import sys

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


def _register() -> None:
    from cli import images, inspect, pull

    app.command("pull")(pull.pull)
    app.command("images")(images.images)
    app.command("inspect")(inspect.inspect)


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
