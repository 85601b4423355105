"""cas serve: the store as a registry on HTTP, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _option(flag: str, help_text: str, metavar: str | None = None, **extra: object) -> typer.models.OptionInfo:
    return typer.Option(flag, metavar=metavar, help=help_text, **extra)


Listen = Annotated[
    str | None,
    _option(
        "--listen",
        "Address to listen on (default: `listen` under [serve] in config.toml, else 127.0.0.1:5050). "
        "A non-loopback one needs --htpasswd or --allow-anonymous.",
        "HOST:PORT",
    ),
]
Upstream = Annotated[
    list[str] | None,
    _option(
        "--upstream",
        "Name an upstream by a first path component: with lab=127.0.0.1:5000, /v2/lab/app means 127.0.0.1:5000/app. "
        "Repeatable; replaces `upstreams` under [serve] in config.toml.",
        "ALIAS=HOST[:PORT]",
    ),
]
AllowAnonymous = Annotated[
    bool, _option("--allow-anonymous", "Serve on a non-loopback address without authentication.")
]
Offline = Annotated[bool, _option("--offline", "Serve only what the store holds; never pull (the air-gapped side).")]
Htpasswd = Annotated[
    Path | None, _option("--htpasswd", "Require HTTP Basic credentials from this bcrypt htpasswd file.", "FILE")
]
TlsCert = Annotated[Path | None, _option("--tls-cert", "Serve HTTPS with this certificate.", "PEM")]
TlsKey = Annotated[Path | None, _option("--tls-key", "The certificate's private key.", "PEM")]
LogFormat = Annotated[str, _option("--log-format", "The access log's lines on stderr.", "text|json")]
ClientTimeout = Annotated[
    float, _option("--client-timeout", "Drop a client that takes no byte for this long.", "SECONDS", min=1)
]
MaxConnections = Annotated[
    int | None,
    _option(
        "--max-connections",
        "Hold at most this many connections open; past it a new one gets a 503 (default 512, or serve.max-connections).",
        "N",
        min=1,
    ),
]
TagTtl = Annotated[
    float, _option("--tag-ttl", "Re-resolve a tag at its upstream at most this often.", "SECONDS", min=0)
]


def serve(
    listen: Listen = None,
    upstream: Upstream = None,
    allow_anonymous: AllowAnonymous = False,
    offline: Offline = False,
    htpasswd: Htpasswd = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    log_format: LogFormat = "text",
    client_timeout: ClientTimeout = 60.0,
    tag_ttl: TagTtl = 60.0,
    max_connections: MaxConnections = None,
) -> None:
    """Serve the store read-only as an OCI registry (docker, containerd, podman and skopeo pull from it).

    Names map to upstreams as mirrors expect: ?ns=HOST (containerd), an --upstream alias, a first
    component with a dot or a port (ghcr.io/org/tool), else docker.io (library/ for one-part names).
    GET /archive/NAME[:TAG|@DIGEST]?format=docker-archive|oci-archive&platform=OS/ARCH streams a
    complete archive; without --offline, what the store lacks is pulled first.

    \b
    Examples:
      cas serve
      cas serve --listen 127.0.0.1:5050 --upstream lab=127.0.0.1:5000
      curl -fsS http://127.0.0.1:5050/archive/library/alpine:3.20 | docker load
    """
    from cas.serve import ServeOptions, parse_listen
    from cas.serve import serve as run_serve
    from cas.serve.names import parse_upstreams
    from cas.settings import current
    from cas.store import Store
    from cli import output

    settings = current()
    host, port = _checked(settings.resolve("serve.listen", listen), "--listen", parse_listen)
    aliases = _checked(
        settings.resolve("serve.upstreams", upstream), "--upstream", lambda given: parse_upstreams(list(given))
    )
    options = ServeOptions(
        host=host,
        port=port,
        aliases=aliases,
        allow_anonymous=allow_anonymous,
        offline=offline,
        tag_ttl=tag_ttl,
        log_format=log_format,
        htpasswd=htpasswd,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_timeout=client_timeout,
        max_connections=settings.value("serve.max-connections", max_connections),
    )
    run_serve(Store(), options, output.notice)
    output.notice("stopped")


def _checked(setting, flag: str, parse):
    """``parse(setting.value)``; a bad value is blamed on where it came from: the flag, or config.toml's line."""
    from cas.errors import CasError, ConfigError, UsageError

    try:
        return parse(setting.value)
    except (CasError, ValueError) as exc:
        message = exc.message if isinstance(exc, CasError) else str(exc)
        if setting.origin == "file":
            raise ConfigError(f"{setting.source}: {setting.key}: {message}", hint="fix that line of the file") from None
        raise UsageError(f"{flag} {message}", hint=getattr(exc, "hint", None)) from None
