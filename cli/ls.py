"""cas ls REPO: a repository's tags, asked of its registry (the store is not opened)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import options, output


def ls(
    repository: Annotated[
        str, typer.Argument(metavar="REPO", help="A repository: alpine, host:5000/team/app (no tag or digest).")
    ],
    page_size: Annotated[
        int | None,
        typer.Option("--page-size", min=1, metavar="N", help="Ask the registry for N tags a page (default: its own)."),
    ] = None,
    insecure: options.Insecure = False,
    username: options.Username = None,
    password_stdin: options.PasswordStdin = False,
    hosts_dir: options.HostsDir = None,
    timeout: options.Timeout = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """List a repository's tags at its registry, every page, through the same mirrors and logins as pull.

    \b
    Examples:
      cas ls 127.0.0.1:5000/team/app
      cas ls --json alpine | jq -r '.tags[]'
    """
    from cas import remote

    repo = remote.repository_of(repository)
    tags = remote.list_tags(
        repo, options.remote_options(insecure, username, password_stdin, hosts_dir, timeout), page_size
    )
    if as_json:
        output.emit_json("ls", {"repository": repo.name, "tags": tags})
        return
    for name in tags:
        print(name)
    if not tags and not quiet:
        output.notice(f"{repo.name} has no tags")
