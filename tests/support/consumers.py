"""The programs that must accept what cas exports: skopeo, a private dockerd, podman.

Why: an export is only correct if real consumers load it. Each helper isolates its tool
(own data root, sockets, config dir) so the host's state never leaks into a result, and
``wipe()`` empties the image store: ``docker load`` skips layers the daemon already holds and
never opens those files, so an incomplete tar "loads" fine on a daemon that has the layers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import IO

from .tools import CommandFailed, GiveUp, require, run, spawn, terminate, wait_until

Source = Path | str | bytes | IO[bytes]


def _stdin_args(source: Source) -> tuple[list[str], dict]:
    """``-i PATH`` for a path, stdin for bytes or an open binary file."""
    if isinstance(source, (bytes, bytearray)):
        return [], {"input": bytes(source)}
    if isinstance(source, (str, Path)):
        return ["-i", str(source)], {}
    return [], {"stdin": source}


class Skopeo:
    """skopeo with ``--insecure-policy`` and TLS verification off for 127.0.0.1 registries."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require("skopeo", "skopeo")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(self.workdir), "REGISTRY_AUTH_FILE": str(self.workdir / "auth.json")}

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return run([self.binary, "--insecure-policy", *args], check=check, env=self.env, timeout=timeout)

    def copy(
        self,
        src: str,
        dest: str,
        *,
        src_creds: str | None = None,
        dest_creds: str | None = None,
        all: bool = False,
        format: str | None = None,
        extra: tuple[str, ...] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """``skopeo copy SRC DEST``; docker:// ends get ``--*-tls-verify=false``; creds are "user:pass"."""
        args = ["copy"]
        if src.startswith("docker://"):
            args.append("--src-tls-verify=false")
        if dest.startswith("docker://"):
            args.append("--dest-tls-verify=false")
        if src_creds:
            args.append(f"--src-creds={src_creds}")
        if dest_creds:
            args.append(f"--dest-creds={dest_creds}")
        if all:
            args.append("--all")
        if format:
            args.append(f"--format={format}")
        return self.run(*args, *extra, src, dest, check=check)

    def inspect(self, ref: str, *, raw: bool = False, creds: str | None = None) -> dict:
        """``skopeo inspect`` (``--raw`` gives the manifest itself) parsed as JSON."""
        args = ["inspect"]
        if ref.startswith("docker://"):
            args.append("--tls-verify=false")
        if creds:
            args.append(f"--creds={creds}")
        if raw:
            args.append("--raw")
        return json.loads(self.run(*args, ref).stdout)


def _docker_client() -> str:
    """The client shipped with dockerd (Debian's docker.io) if present, else docker from PATH."""
    return require("docker", "docker.io", prefer=("/usr/bin/docker",))


class Dockerd:
    """A private dockerd (vfs, no iptables, own data-root/exec-root/socket): started by hand, since nothing here runs systemd."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.workdir = Path(workdir)
        self.extra_args = extra_args  # e.g. --registry-mirror=URL
        self.socket = self.workdir / "d.sock"
        self.log_path = self.workdir / "dockerd.log"
        self._proc: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.workdir / "client-config"),
        }

    def start(self, timeout: float = 90) -> Dockerd:
        dockerd = require("dockerd", "docker.io")
        self.client = _docker_client()
        for sub in ("root", "exec", "client-config"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._proc = spawn(
            [
                dockerd,
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                f"--data-root={self.workdir / 'root'}",
                f"--exec-root={self.workdir / 'exec'}",
                f"--pidfile={self.workdir / 'dockerd.pid'}",
                f"--host=unix://{self.socket}",
                *self.extra_args,
            ],
            log=self.log_path,
        )

        def up() -> bool:
            if self._proc.poll() is not None:
                raise GiveUp("dockerd exited")
            return self.docker("version", check=False, timeout=10).returncode == 0

        try:
            wait_until(up, timeout=timeout, what="dockerd", interval=0.2)
        except (TimeoutError, GiveUp) as exc:
            self.stop()
            raise RuntimeError(
                f"dockerd did not start ({exc}); its log:\n" + self.log_path.read_text(errors="replace")[-3000:]
            ) from None
        return self

    def stop(self) -> None:
        terminate(self._proc, timeout=30)
        self._proc = None

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def docker(
        self,
        *args: str,
        input: bytes | str | None = None,
        stdin: IO[bytes] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        return run([self.client, *args], input=input, stdin=stdin, check=check, env=self.env, timeout=timeout)

    def load(self, source: Source, *, check: bool = True) -> subprocess.CompletedProcess:
        """``docker load`` from a path, bytes or a binary file (stdin); raises with stderr if asked."""
        extra, kwargs = _stdin_args(source)
        return self.docker("load", *extra, check=check, **kwargs)

    def images(self) -> list[dict]:
        """``docker images -a`` rows: Repository, Tag, ID, ..."""
        out = self.docker("images", "-a", "--no-trunc", "--format", "{{json .}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def image_inspect(self, image: str) -> dict:
        return json.loads(self.docker("image", "inspect", image).stdout)[0]

    def run(self, image: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """``docker run --rm --network none IMAGE CMD...``"""
        return self.docker("run", "--rm", "--network", "none", image, *cmd, check=check)

    def wipe(self) -> None:
        """Remove every container and image, so the next load meets an EMPTY store."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", *containers)
        ids = sorted({row["ID"] for row in self.images()})
        if ids:
            self.docker("rmi", "-f", *ids)
        left = self.images()
        if left:
            raise RuntimeError(f"dockerd still holds images after wipe: {left}")


class Podman:
    """podman with its own root, runroot and tmpdir, vfs, cgroupfs and file events."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require("podman", "podman")
        self.workdir = Path(workdir)
        for sub in ("root", "runroot", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(self.workdir / "tmp")}
        self.base = [
            self.binary,
            "--root",
            str(self.workdir / "root"),
            "--runroot",
            str(self.workdir / "runroot"),
            "--tmpdir",
            str(self.workdir / "tmp"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def podman(
        self,
        *args: str,
        input: bytes | str | None = None,
        stdin: IO[bytes] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        return run([*self.base, *args], input=input, stdin=stdin, check=check, env=self.env, timeout=timeout)

    def load(self, source: Source, *, check: bool = True) -> subprocess.CompletedProcess:
        """``podman load`` (exit 125 on a missing layer)."""
        extra, kwargs = _stdin_args(source)
        return self.podman("load", *extra, check=check, **kwargs)

    def images(self) -> list[dict]:
        return json.loads(self.podman("images", "-a", "--format", "json").stdout or "[]")

    def image_inspect(self, image: str) -> dict:
        return json.loads(self.podman("image", "inspect", image).stdout)[0]

    def run(self, image: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.podman(
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            image,
            *cmd,
            check=check,
        )

    def wipe(self) -> None:
        self.podman("rm", "-a", "-f")
        self.podman("rmi", "-a", "-f")
        left = self.images()
        if left:
            raise RuntimeError(f"podman still holds images after wipe: {left}")


__all__ = ["Skopeo", "Dockerd", "Podman", "CommandFailed"]
