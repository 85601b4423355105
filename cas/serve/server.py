"""Run the registry: listen, serve until SIGINT or SIGTERM, then stop as an operator expects.

On a signal the server stops accepting, lets requests in flight finish for up to
``SHUTDOWN_GRACE`` seconds (aiohttp's runner does the waiting), then drops its leases.
Nothing it does leaves the store inconsistent: it only reads blobs and writes leases and
last-use times, so a kill at any moment is safe too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from cas import budget
from cas.errors import CasError, UsageError
from cas.registry import transport
from cas.serve import archive, auth, observe, pool
from cas.serve.auth import Htpasswd
from cas.serve.handlers import SERVICE, Service, api_version, routes, spec_errors, unknown
from cas.serve.through import DEFAULT_TAG_TTL, PullThrough
from cas.settings import DEFAULT_LISTEN, DEFAULT_SERVE_CONNECTIONS
from cas.store import Store

SHUTDOWN_GRACE = 10.0
EXPIRE_EVERY = 10.0  # seconds between sweeps of leases nobody renewed
CLIENT_TIMEOUT = 60.0  # seconds a client may take no byte before it is dropped
BACKLOG = 512
KEEPALIVE = 75.0  # idle keep-alive connections are closed after this many seconds (nginx's default)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 5050
    aliases: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool = False
    offline: bool = False
    tag_ttl: float = DEFAULT_TAG_TTL
    log_format: str = "text"  # or "json"
    htpasswd: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_timeout: float = CLIENT_TIMEOUT
    max_connections: int = DEFAULT_SERVE_CONNECTIONS  # open at once; past it a new one gets a 503


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); UsageError when it is neither."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{text!r} is not HOST:PORT", hint=f"e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(options: ServeOptions) -> None:
    """A server others can reach hands out what the operator's credentials fetch: refuse it unless asked."""
    if not is_loopback(options.host) and not options.allow_anonymous and options.htpasswd is None:
        raise UsageError(
            f"refusing to serve the store on {options.host}, which is not a loopback address, without authentication",
            hint="anyone who can reach it could pull every cached image: give --htpasswd FILE, or --allow-anonymous if that is intended",
        )
    if (options.tls_cert is None) != (options.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together", hint="give both, or neither for plain HTTP")


def build_app(service: Service, htpasswd: Htpasswd | None = None) -> web.Application:
    middlewares = [observe.counted, spec_errors] + ([auth.required(htpasswd)] if htpasswd is not None else [])
    app = web.Application(middlewares=middlewares)
    app[SERVICE] = service
    app.on_response_prepare.append(api_version)
    app[observe.METRICS] = observe.Metrics(lambda: dict(service.through.fetched) if service.through else {})
    app.add_routes(
        [
            *routes(),
            web.get("/archive/{name:.+}", archive.archive),
            web.get("/metrics", observe.metrics),
            web.route("*", "/{tail:.*}", unknown),
        ]
    )
    return app


def listen(options: ServeOptions) -> socket.socket:
    """The listening socket. Its connections inherit TCP_USER_TIMEOUT: a client that takes no byte
    (its window stays shut) for ``client_timeout`` seconds is dropped by the kernel, which frees its transfer."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    try:
        sock = socket.create_server((options.host, options.port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror}", hint="pick another --listen"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(options.client_timeout * 1000))
    return sock


def tls_context(options: ServeOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None or options.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use --tls-cert {options.tls_cert} with --tls-key {options.tls_key}: {exc}") from None
    return context


def serve(store: Store, options: ServeOptions, say: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM; ``say`` gets the URL once the socket listens, and the log lines."""
    check_exposure(options)
    if options.log_format not in observe.FORMATS:
        raise UsageError(f"--log-format {options.log_format!r}: choose text or json")
    htpasswd = Htpasswd.read(options.htpasswd) if options.htpasswd is not None else None
    pool.reserve_descriptors(options.max_connections)
    through = None if options.offline else PullThrough(store, options.tag_ttl, say, budget.Budget.resolve())
    _warm(store, pull_through=through is not None)
    service = Service(store, dict(options.aliases), offline=options.offline, through=through)
    try:
        asyncio.run(_serve(build_app(service, htpasswd), options, say))
    finally:
        service.leases.release_all()
        if through is not None:
            through.close()


def _warm(store: Store, *, pull_through: bool) -> None:
    """Pay the one-time costs before the first client waits on them: the metadata opened (its property
    opens it on first use) and, for pull-through, the HTTP stack imported."""
    _ = store.metadata
    if pull_through:
        transport.preload()


async def _serve(app: web.Application, options: ServeOptions, on_ready: Callable[[str], None]) -> None:
    service = app[SERVICE]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=observe.access_logger(),
        access_log_class=observe.access_log_class(app[observe.METRICS]),
        access_log_format=options.log_format,
        shutdown_timeout=SHUTDOWN_GRACE,
        keepalive_timeout=KEEPALIVE,
    )
    await runner.setup()
    listener = None
    try:
        context, sock = tls_context(options), listen(options)
        connection = pool.Bounded(runner.server, options.max_connections)
        listener = await loop.create_server(connection, sock=sock, ssl=context, backlog=BACKLOG)
        mode = "offline" if service.through is None else "pull-through"
        url = _url(sock, "https" if context else "http")
        on_ready(f"serving {service.store.root} on {url} (read-only, {mode}); Ctrl-C stops")
        expiring = asyncio.create_task(_housekeeping(app))
        keeping = asyncio.create_task(budget.watch(service.store, on_ready))  # max-size and max-age, while idle
        await stop.wait()
        expiring.cancel()
        keeping.cancel()
    finally:
        if listener is not None:
            listener.close()  # stops accepting
        await runner.cleanup()  # waits for requests in flight up to SHUTDOWN_GRACE
        await asyncio.to_thread(app[observe.METRICS].flush, service.store.metadata)


async def _housekeeping(app: web.Application) -> None:
    """Every EXPIRE_EVERY seconds: drop leases nobody renewed, and add the bytes served to `cas stats`."""
    service = app[SERVICE]
    while True:
        await asyncio.sleep(EXPIRE_EVERY)
        with contextlib.suppress(CasError, OSError):  # a busy index: the next sweep retries
            await asyncio.to_thread(service.leases.expire)
            await asyncio.to_thread(app[observe.METRICS].flush, service.store.metadata)


def _url(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
