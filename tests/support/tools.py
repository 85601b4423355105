"""Process helpers shared by the servers and consumers: find a binary or fail loudly, free
ports, waiting, and running commands whose failure message carries stderr.

Why: a missing tool must never turn into a quiet skip, and a failing consumer (docker load,
skopeo) must show its own error text in the test report.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

SETUP_HINT = "run `bash .ci/run` (it installs everything) or `apt-get install -y {package}`"


class MissingTool(RuntimeError):
    """A binary the tests need is not installed. Never skip on this: fail and say how to fix it."""


class CommandFailed(subprocess.CalledProcessError):
    """A command exited non-zero; str() shows the command, exit code and stderr."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode("utf-8", "replace")
        return f"`{' '.join(map(str, self.cmd))}` exited {self.returncode}:\n{err.strip()}"


def require(binary: str, package: str, *, prefer: Sequence[str] = ()) -> str:
    """Absolute path of ``binary`` (first of ``prefer`` that exists, else from PATH), or raise MissingTool."""
    for candidate in prefer:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(binary)
    if not found:
        raise MissingTool(f"`{binary}` is not installed: " + SETUP_HINT.format(package=package))
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries if it loses a race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GiveUp(Exception):
    """Raised inside a ``wait_until`` check to stop waiting at once (e.g. the server exited)."""


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except GiveUp:
            raise
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(
    url: str, *, timeout: float = 2, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> int:
    """Status of a plain GET to ``url``, never through an HTTP proxy from the environment.

    ``context``: the TLS context for an https URL (e.g. trusting a test CA)."""
    opener = (
        _direct
        if context is None
        else urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    )
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (free port) serving from a daemon thread.

    ``owner`` is the object the handlers report to (``self.server.owner``).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], owner: object, name: str, poll_interval: float = 0.5
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner
        threading.Thread(target=self.serve_forever, args=(poll_interval,), name=name, daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what many tests do on purpose (a timeout, a cut
        download), not a fault of the server, so it prints nothing; anything else still prints."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM the child when pytest dies, so no server outlives a killed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(
    cmd: Sequence[str],
    *,
    log: Path,
    stderr_log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a background server, stdout appended to ``log`` (stderr too unless ``stderr_log``).

    It gets SIGTERM when the thread that spawned it (pytest's main thread) dies.
    """
    with open(log, "ab") as out, open(stderr_log or os.devnull, "ab") as err:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err if stderr_log else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )


def terminate(proc: subprocess.Popen | None, *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only ever the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    input: bytes | str | None = None,
    stdin: IO[bytes] | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    text: bool = True,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command; stdout/stderr are str unless ``text=False`` (then stdout is bytes, stderr str).

    ``check=True`` raises CommandFailed whose message includes stderr.
    """
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(
        [str(c) for c in cmd],
        input=input,
        stdin=None if input is not None else (stdin or subprocess.DEVNULL),  # never the terminal
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    stdout = proc.stdout.decode("utf-8", "replace") if text else proc.stdout
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, proc.args, stdout, stderr)
    return result


def cas_in_background(home: Path, *args: str) -> subprocess.Popen:
    """``python -m cli ARGS`` with ``CAS_HOME=home``, output discarded: a command a test will kill."""
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "CAS_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def store_lock_held(home: Path, *, shared: bool) -> Iterator[subprocess.Popen]:
    """Another process holding the store's lock at ``home`` (shared or exclusive) until the block ends."""
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cas.store import Store; "
            "l = Store(sys.argv[1]).lock(shared=sys.argv[2] == 'shared'); "
            "l.acquire(); print('held', flush=True); time.sleep(60)",
            str(home),
            "shared" if shared else "exclusive",
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError(f"no lock holder for {home}")
        yield holder
    finally:
        holder.kill()
        holder.wait()
