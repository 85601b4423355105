"""cas login [REGISTRY] / cas logout [REGISTRY]: credentials in docker's config.json, shared with docker and podman."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import options, output

Registry = Annotated[
    str,
    typer.Argument(
        metavar="[REGISTRY]",
        help="Registry host[:port], e.g. ghcr.io or 127.0.0.1:5000 (default: Docker Hub, as with docker login).",
        show_default=False,
    ),
]


def login(
    registry: Registry = "docker.io",
    username: Annotated[
        str | None, typer.Option("--username", "-u", metavar="USER", help="User name (else asked for).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password or token from stdin (else asked for).")
    ] = False,
    insecure: options.Insecure = False,
    hosts_dir: options.HostsDir = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
    verbose: options.Verbose = False,
) -> None:
    """Log in to a registry: check the credentials, then save them where docker keeps its logins.

    The password is read from stdin or a prompt, never from an argument (it would show in `ps`
    and shell history). Saved in $DOCKER_CONFIG/config.json, or through its credsStore or
    credHelpers, so `docker` and `podman` see the same login. The registry is reached as pulls
    and pushes reach it: hosts.toml `server` and TLS files, certs.d, and `insecure` from
    registries.conf or daemon.json.

    \b
    Examples:
      cas login registry.example.com
      echo "$TOKEN" | cas login -u ci --password-stdin ghcr.io
      cas login -u me                     # Docker Hub
    """
    from cas.reference import DOCKER_HUB, DOCKER_HUB_API
    from cas.registry import Credentials, RegistryClient
    from cas.registry.login import store_credentials

    host, endpoints, saved_as = _resolve(registry, insecure, hosts_dir)  # a bad file fails before the prompt
    username, password = _ask(registry, username, password_stdin)
    credentials = Credentials(username=username, password=password)
    api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
    with RegistryClient(api_host, endpoints=endpoints, insecure=insecure, credentials=credentials) as client:
        client.check_login()
    where = store_credentials(saved_as, credentials)
    if as_json:
        output.emit_json("login", {"registry": saved_as, "username": username, "saved_in": where})
    elif not quiet:
        moved = "" if saved_as == host else f", where {endpoints[-1].source} puts {host}"
        output.notice(f"logged in to {saved_as} as {username}{moved} (saved in {where})")


def _ask(registry: str, username: str | None, password_stdin: bool) -> tuple[str, str]:
    """(user, password) from --username and stdin, or from prompts on a terminal."""
    from cas.errors import UsageError

    example = f'echo "$TOKEN" | cas login -u USER --password-stdin {registry}'
    if password_stdin:
        if username is None:
            raise UsageError("--password-stdin needs --username", hint=example)
        return username, options.stdin_password(example)
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password on", hint=f"pipe it: {example}")
    import getpass

    username = username or input("Username: ").strip()
    password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("a login needs a user name and a password", hint=f"cas login -u USER {registry}")
    return username, password


def logout(
    registry: Registry = "docker.io",
    hosts_dir: options.HostsDir = None,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Remove a registry's saved login from docker's config.json (or its credential helper).

    Not being logged in is no failure, as with docker logout: it is said, and the exit status is 0.

    \b
    Examples:
      cas logout registry.example.com
    """
    from cas.registry.login import erase_credentials

    host, _, saved_as = _resolve(registry, False, hosts_dir)
    # also a login saved under the name before the files moved it
    removed = next((name for name in dict.fromkeys((saved_as, host)) if erase_credentials(name)), None)
    if as_json:
        output.emit_json("logout", {"registry": removed or saved_as, "removed": removed is not None})
    elif not quiet:
        output.notice(f"removed login for {removed}" if removed else f"not logged in to {saved_as}: nothing to remove")


def _resolve(registry: str, insecure: bool, hosts_dirs: list[str] | None) -> tuple[str, list, str]:
    """(the registry, its endpoints, the host a login is saved for). A configuration that puts the
    registry elsewhere (a registries.conf ``location``, a hosts.toml ``server``) gets the check, so
    the login is saved for that host: the one a pull asks for credentials. Never for a host it was
    not checked against."""
    from cas.registry.credentials import normalize_registry
    from cas.registry.endpoints import Sources

    host = normalize_registry(registry)
    endpoints = Sources.from_env(hosts_dirs).login_endpoints(host, insecure=insecure)
    return host, endpoints, normalize_registry(endpoints[-1].host)
