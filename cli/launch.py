"""The `cas` entry point: answers `cas --version` before typer is imported, else runs the app.

typer (with click) costs ~30 ms to import and the app's commands ~15 ms more; `--version`
needs neither, and build scripts call it often. Everything else goes to ``cli.main``.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from cas import __version__

        try:
            sys.stdout.write(f"cas {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            sys.exit(141)
        return
    from cli.main import main as run

    run()
