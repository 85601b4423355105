"""Options shared by several commands, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cas.settings import DEFAULT_CONNECTIONS, DEFAULT_JOBS, DEFAULT_LOCK_TIMEOUT, DEFAULT_MIN_RATE, DEFAULT_TIMEOUT
from cas.sizes import parse_duration, parse_size

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


def setting(key: str) -> Callable:
    """A callback giving an option the value cas.settings resolves: the flag, else its variable, else
    config.toml, else the default."""

    def resolve(ctx, value: object) -> object:  # click's context names the command for the hint
        from cas.errors import UsageError
        from cas.settings import current

        try:
            found = current().resolve(key, value)
        except UsageError as exc:  # a bad variable
            raise UsageError(exc.message, hint=f"{exc.hint}; see `{ctx.command_path} --help`") from None
        return found.value

    return resolve


def _platforms_setting(ctx, value: str | None) -> str | None:
    return check_platforms(setting("platform")(ctx, value))


def _platform_setting(ctx, value: str | None) -> str | None:
    return check_platform(setting("platform")(ctx, value))


ImageSetFile = Annotated[
    str | None,
    typer.Option(
        "--file",
        "-f",
        metavar="FILE",
        help="Read image references from FILE ('-': stdin): one a line, REF [PLATFORM,...], '#' comments; "
        "a lock file's NAME:TAG@DIGEST lines are taken exactly.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only: no progress bars, no summary.")]
ExportPlatform = Annotated[
    str | None,
    typer.Option(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        callback=_platform_setting,
        help="Export only this platform of each REF, e.g. linux/arm64 (default: $CAS_PLATFORM, "
        "$DOCKER_DEFAULT_PLATFORM or `platform` in config.toml, else every cached platform in an OCI "
        "format; in a docker-archive, which holds one, the only one cached, else this host's).",
    ),
]
PlatformsOpt = Annotated[
    str | None,
    typer.Option(
        "--platform",
        metavar="OS/ARCH[/VARIANT][,...]",
        callback=_platforms_setting,
        help="Platforms to pick from a multi-platform image, comma-separated, e.g. linux/amd64,linux/arm64 "
        "(default: $CAS_PLATFORM, $DOCKER_DEFAULT_PLATFORM or `platform` in config.toml, else this host).",
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
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        max=32,
        metavar="N",
        callback=setting("jobs"),
        help=f"Blobs transferred at once (1-32; default {DEFAULT_JOBS}, or $CAS_JOBS, or `jobs` in config.toml).",
    ),
]
Connections = Annotated[
    int | None,
    typer.Option(
        "--connections",
        min=1,
        max=64,
        metavar="N",
        callback=setting("connections"),
        help="Connections per pull in all: large blobs are fetched as parallel Range requests while some are free "
        f"(1: one stream per blob; default {DEFAULT_CONNECTIONS}, or $CAS_CONNECTIONS, or `connections` in config.toml).",
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
        help="A containerd hosts.toml directory (DIR/HOST/hosts.toml) naming mirrors; repeatable. Replaces "
        "$CAS_HOSTS_DIR (':'-separated), `hosts-dir` in config.toml and the defaults /etc/containerd/certs.d, "
        "/etc/docker/certs.d.",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.1,
        metavar="SECONDS",
        callback=setting("timeout"),
        help=f"The longest to wait without progress, in total: connecting, answers, retries (default {DEFAULT_TIMEOUT:g}, "
        f"or $CAS_TIMEOUT, or `timeout` in config.toml). A download moving slower than $CAS_MIN_RATE bytes/s (default "
        f"{DEFAULT_MIN_RATE}) for this long is aborted; the next pull resumes it.",
    ),
]
LockTimeout = Annotated[
    float | None,
    typer.Option(
        "--lock-timeout",
        min=0,
        metavar="SECONDS",
        callback=setting("lock-timeout"),
        help="Seconds to wait for the store lock (pulls and exports share it; prune and verify --repair need it "
        f"alone; default {DEFAULT_LOCK_TIMEOUT:g}, or $CAS_LOCK_TIMEOUT, or `lock-timeout` in config.toml).",
    ),
]


def _limit(flag: str, parse: Callable[[str], object], metavar: str, help: str) -> typer.models.OptionInfo:
    """A size-budget option (``--max-size``, ``--max-age``): ``parse``'s ValueError is a usage error."""

    def parser(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return typer.Option(flag, parser=parser, metavar=metavar, help=help)


MaxSize = Annotated[
    int | None,
    _limit(
        "--max-size",
        parse_size,
        "SIZE",
        "Keep the store under SIZE (10GB, 500MiB): after this command, least-recently-used images are "
        "evicted to 90% of it (default: $CAS_MAX_SIZE, or `max-size` in config.toml, else no budget).",
    ),
]
MaxAge = Annotated[
    float | None,
    _limit(
        "--max-age",
        parse_duration,
        "DURATION",
        "After this command, evict images not pulled or exported for DURATION (7d, 12h, 90m) "
        "(default: $CAS_MAX_AGE, or `max-age` in config.toml, else none).",
    ),
]


def read_credentials(
    username: str | None,
    password_stdin: bool,
    flags: tuple[str, str] = ("--username", "--password-stdin"),
    example: str = 'echo "$TOKEN" | cas pull -u USER --password-stdin REF',
) -> Credentials | None:
    """--username with --password-stdin, as docker login takes them; None means look in docker's config.
    ``flags``: the two options' names as the command spells them (copy's --src-username, ...)."""
    from cas.errors import UsageError

    if username is None and not password_stdin:
        return None
    if username is None or not password_stdin:
        raise UsageError(f"{flags[0]} and {flags[1]} go together", hint=example)
    from cas.registry import Credentials

    return Credentials(username=username, password=stdin_password(example))


def one_stdin(file: str | None, *password_stdin: bool) -> None:
    """`-f -` and a --password-stdin cannot share stdin: the list would swallow the password."""
    if file == "-" and any(password_stdin):
        from cas.errors import UsageError

        raise UsageError(
            "-f - and --password-stdin would both read stdin",
            hint="write the image list to a file, or save the login first with `cas login HOST`",
        )


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
    jobs: int | None = None,
    connections: int | None = None,
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

    The mirror configuration is read here, so a malformed file fails before any pull starts. What no
    flag gave (`cas export --pull` has no --jobs) comes from cas.settings.
    """
    from cas.errors import UsageError
    from cas.manifest import Platform
    from cas.pull import PullOptions
    from cas.registry.endpoints import Sources
    from cas.settings import current

    if all_platforms and platform:
        raise UsageError(
            "--all-platforms and --platform pick the platforms two ways", hint="give one of them, not both"
        )
    settings = current()
    return PullOptions(
        platforms=tuple(Platform.parse(text) for text in platform.split(",")) if platform else (),
        all_platforms=all_platforms,
        jobs=settings.value("jobs", jobs),
        connections=settings.value("connections", connections),
        insecure=insecure,
        credentials=read_credentials(username, password_stdin),
        observer=observer(quiet, as_json),
        lock_timeout=lock_timeout,
        sources=Sources.from_env(hosts_dirs),
        timeout=settings.value("timeout", timeout),
        min_rate=settings.value("min-rate"),
    )


def observer(quiet: bool, as_json: bool) -> QuietObserver:
    """Bars for a person at a terminal; else only the lock-wait lines and, unless quiet, the retry lines
    (pull, push, export --pull)."""
    from cli import output
    from cli.progress import BarsObserver, QuietObserver

    return BarsObserver() if output.want_progress(quiet, as_json) else QuietObserver(quiet)


def remote_options(
    insecure: bool, username: str | None, password_stdin: bool, hosts_dirs: list[str] | None, timeout: float | None
):
    """The RemoteOptions of `cas ls` and `cas inspect --remote`: a pull's endpoints, logins and timeout."""
    from cas.registry.endpoints import Sources
    from cas.remote import RemoteOptions
    from cas.settings import current

    return RemoteOptions(
        insecure=insecure,
        credentials=read_credentials(username, password_stdin),
        sources=Sources.from_env(hosts_dirs),
        timeout=current().value("timeout", timeout),
    )
