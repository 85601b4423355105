"""cas serve: the store as a registry on HTTP, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LISTEN_HELP = "Address to listen on. A non-loopback address needs --htpasswd or --allow-anonymous."


def serve(
    listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT", help=LISTEN_HELP)] = "127.0.0.1:5050",
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            metavar="ALIAS=HOST[:PORT]",
            help="Name an upstream by a first path component: with lab=127.0.0.1:5000, /v2/lab/app means 127.0.0.1:5000/app. Repeatable.",
        ),
    ] = None,
    allow_anonymous: Annotated[
        bool,
        typer.Option("--allow-anonymous", help="Serve on a non-loopback address without authentication."),
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Serve only what the store holds; never pull (the air-gapped side).")
    ] = False,
    htpasswd: Annotated[
        Path | None,
        typer.Option(
            "--htpasswd", metavar="FILE", help="Require HTTP Basic credentials from this bcrypt htpasswd file."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="PEM", help="Serve HTTPS with this certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="PEM", help="The certificate's private key.")
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", metavar="text|json", help="The access log's lines on stderr.")
    ] = "text",
    client_timeout: Annotated[
        float,
        typer.Option(
            "--client-timeout", metavar="SECONDS", min=1, help="Drop a client that takes no byte for this long."
        ),
    ] = 60.0,
    tag_ttl: Annotated[
        float,
        typer.Option(
            "--tag-ttl", metavar="SECONDS", min=0, help="Re-resolve a tag at its upstream at most this often."
        ),
    ] = 60.0,
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
    from cas.errors import UsageError
    from cas.serve import ServeOptions, parse_listen
    from cas.serve import serve as run_serve
    from cas.serve.names import parse_upstreams
    from cas.store import Store
    from cli import output

    host, port = parse_listen(listen)
    try:
        aliases = parse_upstreams(upstream or [])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
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
    )
    run_serve(Store(), options, output.notice)
    output.notice("stopped")
