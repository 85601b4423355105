"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the commands that need them import them when they run: `cas images` needs neither
    from cas.pull import PullOptions
    from cas.registry import Credentials
    from cli.progress import QuietObserver


def _verbose(value: bool) -> bool:
    if value:
        from cli import output

        output.enable_logging()
    return value


Json = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON object on stdout.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        callback=_verbose,
        is_eager=True,
        help="Log each HTTP request (method, URL, status, bytes, time) and each lock wait to stderr.",
    ),
]


def check_platform(value: str | None) -> str | None:
    """A bad --platform (or $CAS_PLATFORM) is a usage error, caught before anything runs."""
    if value is not None:
        from cas.errors import CasError
        from cas.manifest import Platform

        try:
            Platform.parse(value)
        except CasError as exc:
            raise typer.BadParameter(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None
    return value


def check_platforms(value: str | None) -> str | None:
    """`cas pull --platform A,B`: each platform of the list is checked as one --platform is."""
    for text in value.split(",") if value is not None else ():
        check_platform(text)
    return value


PLATFORM_ENV = ["CAS_PLATFORM", "DOCKER_DEFAULT_PLATFORM"]  # docker's own default, as docker pull reads it
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only: no progress bars, no summary.")]
ExportPlatform = Annotated[
    str | None,
    typer.Option(
        "--platform",
        envvar=PLATFORM_ENV,
        metavar="OS/ARCH[/VARIANT]",
        callback=check_platform,
        help="Export only this platform of each REF, e.g. linux/arm64 (default: every cached platform in an OCI "
        "format; in a docker-archive, which holds one, the only one cached, else this host's).",
    ),
]
PlatformsOpt = Annotated[
    str | None,
    typer.Option(
        "--platform",
        envvar=PLATFORM_ENV,
        metavar="OS/ARCH[/VARIANT][,...]",
        callback=check_platforms,
        help="Platforms to pick from a multi-platform image, comma-separated, e.g. linux/amd64,linux/arm64 "
        "(default: this host).",
    ),
]


def one_platform(help: str) -> typer.models.OptionInfo:
    """A ``--platform`` that names one cached platform (inspect, rm, push), checked like pull's."""
    return typer.Option("--platform", metavar="OS/ARCH[/VARIANT]", callback=check_platform, help=help)


def cached_ref(metavar: str, help: str) -> typer.models.ArgumentInfo:
    """A REF argument naming cached images (export, inspect, rm, push): completed from the store's index.json."""
    from cli import completion

    return typer.Argument(metavar=metavar, help=help, autocompletion=completion.cached_refs)


CachedPlatform = Annotated[
    str | None,
    one_platform("Which cached platform of the reference (default: the only one cached, else this host's)."),
]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Mark this registry insecure, as docker's insecure-registries does: HTTPS without verifying its "
        "certificate, plain HTTP if it does not speak TLS. (Loopback registries use plain HTTP without it.)",
    ),
]
Jobs = Annotated[
    int,
    typer.Option(
        "--jobs", "-j", min=1, max=32, envvar="CAS_JOBS", metavar="N", help="Blobs transferred at once (1-32)."
    ),
]
Connections = Annotated[
    int,
    typer.Option(
        "--connections",
        min=1,
        max=64,
        envvar="CAS_CONNECTIONS",
        metavar="N",
        help="Connections per pull in all: large blobs are fetched as parallel Range requests while some are free (1: one stream per blob).",
    ),
]
Username = Annotated[
    str | None,
    typer.Option(
        "--username", "-u", metavar="USER", help="Registry user name, with --password-stdin (else `cas login`)."
    ),
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password or token from stdin.")
]
HostsDir = Annotated[
    list[str] | None,
    typer.Option(
        "--hosts-dir",
        metavar="PATH",
        help="A containerd hosts.toml directory (DIR/HOST/hosts.toml) naming mirrors; repeatable. "
        "Replaces $CAS_HOSTS_DIR (':'-separated) and the defaults /etc/containerd/certs.d, /etc/docker/certs.d.",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.1,
        envvar="CAS_TIMEOUT",
        metavar="SECONDS",
        help="Seconds to wait for a connection or an answer (default 30). A download moving slower than "
        "$CAS_MIN_RATE bytes/s (default 1024) for this long is aborted; the next pull resumes it.",
    ),
]
LockTimeout = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0,
        envvar="CAS_LOCK_TIMEOUT",
        metavar="SECONDS",
        help="Seconds to wait for the store lock (pulls and exports share it; prune and verify --repair need it alone).",
    ),
]


def read_credentials(username: str | None, password_stdin: bool) -> Credentials | None:
    """--username with --password-stdin, as docker login takes them; None means look in docker's config."""
    from cas.errors import UsageError

    if username is None and not password_stdin:
        return None
    example = 'echo "$TOKEN" | cas pull -u USER --password-stdin REF'
    if username is None or not password_stdin:
        raise UsageError("--username and --password-stdin go together", hint=example)
    from cas.registry import Credentials

    return Credentials(username=username, password=stdin_password(example))


def stdin_password(example: str) -> str:
    """The first line of stdin, for --password-stdin: an empty one is said as what it is."""
    import sys

    from cas.errors import UsageError

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: the password on standard input was empty", hint=example)
    return password


def pull_options(
    platform: str | None,
    *,
    all_platforms: bool = False,
    jobs: int = 4,
    connections: int = 8,
    insecure: bool,
    username: str | None,
    password_stdin: bool,
    lock_timeout: float,
    quiet: bool,
    as_json: bool,
    hosts_dirs: list[str] | None = None,
    timeout: float | None = None,
) -> PullOptions:
    """The PullOptions that `cas pull` and `cas export --pull` build from the same flags.

    The mirror configuration is read here, so a malformed file fails before any pull starts.
    """
    import os

    from cas.errors import UsageError
    from cas.manifest import Platform
    from cas.pull import PullOptions
    from cas.registry.endpoints import Sources
    from cas.registry.stall import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT

    if all_platforms and platform:
        raise UsageError(
            "--all-platforms and --platform pick the platforms two ways", hint="give one of them, not both"
        )
    if timeout is None:
        timeout = _positive_env("CAS_TIMEOUT", DEFAULT_TIMEOUT)
    return PullOptions(
        platforms=tuple(Platform.parse(text) for text in platform.split(",")) if platform else (),
        all_platforms=all_platforms,
        jobs=jobs,
        connections=connections,
        insecure=insecure,
        credentials=read_credentials(username, password_stdin),
        observer=observer(quiet, as_json),
        lock_timeout=lock_timeout,
        sources=Sources.from_env(hosts_dirs, os.environ),
        timeout=timeout,
        min_rate=int(_positive_env("CAS_MIN_RATE", DEFAULT_MIN_RATE, allow_zero=True)),
    )


def observer(quiet: bool, as_json: bool) -> QuietObserver:
    """Bars for a person at a terminal; else only the lock-wait lines (pull, push, export --pull)."""
    from cli import output
    from cli.progress import BarsObserver, QuietObserver

    return BarsObserver() if output.want_progress(quiet, as_json) else QuietObserver()


def _positive_env(name: str, default: float, *, allow_zero: bool = False) -> float:
    import os

    from cas.errors import CasError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise CasError(f"${name}={text!r} is not a {'non-negative' if allow_zero else 'positive'} number")
    return value
