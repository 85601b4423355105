"""The suite's own HTTP servers stay quiet when a client hangs up on them:
tests cut downloads and time out on purpose, and a traceback per cut buried real failures."""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler

from support.tools import LocalServer


def _serve_until_the_client_leaves(seen: list[BaseException], done: threading.Event):
    class Endless(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except BaseException as exc:
                seen.append(exc)
                raise
            finally:
                done.set()

    return Endless


def _hang_up(url_port: int) -> None:
    """Ask, read a little, then reset the connection (SO_LINGER 0), as a client that gives up does."""
    with socket.create_connection(("127.0.0.1", url_port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_hanging_up_prints_no_traceback(capfd):
    seen: list[BaseException] = []
    done = threading.Event()
    server = LocalServer(_serve_until_the_client_leaves(seen, done), None, "endless", poll_interval=0.02)
    server.daemon_threads, server.block_on_close = False, True  # so that stop() waits for the handler
    try:
        _hang_up(server.server_address[1])
        assert done.wait(10), "the handler never noticed the hang-up"
    finally:
        server.stop()
    assert seen and isinstance(seen[0], ConnectionError), seen  # the server did meet the hang-up
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request" not in err, err
    assert "Traceback" not in err, err


def test_a_fault_in_a_handler_still_prints(capfd):
    class Broken(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            raise ValueError("a bug in the test server")

    server = LocalServer(Broken, None, "broken", poll_interval=0.02)
    server.daemon_threads, server.block_on_close = False, True
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1024)
    finally:
        server.stop()
    assert "ValueError: a bug in the test server" in capfd.readouterr().err
