"""A real `cas serve` process on loopback, for the serve tests (tests/test_serve*.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .tools import GiveUp, free_port, spawn, terminate, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


class CasServer:
    """``cas serve --listen 127.0.0.1:PORT ARGS`` with ``CAS_HOME=home``; its stderr is ``log``."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, listen_flag: bool = True) -> None:
        self.home = Path(home)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = self.home.parent / f"serve-{self.port}.log"
        self.args = ("--listen", self.host, *args) if listen_flag else args  # else config.toml names the port
        self.env = {**os.environ, "CAS_HOME": str(self.home), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> CasServer:
        cmd = [sys.executable, "-m", "cli", "serve", *self.args]
        self.proc = spawn(cmd, log=self.log, env=self.env, cwd=REPO_ROOT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise GiveUp(f"cas serve exited {self.proc.returncode}: {self.output()}")
            return "serving " in self.output()  # the ready line: listening, whatever auth or TLS asks

        wait_until(up, timeout=timeout, what="cas serve", interval=0.05)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        terminate(self.proc, timeout=20)

    def __enter__(self) -> CasServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
