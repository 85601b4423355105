"""`cas serve` against the distribution registry serving the same blobs, with skopeo as the client.

It starts a docker-registry on 127.0.0.1, pushes incompressible images (640 MiB in 10 layers,
64 MiB in 2 layers), pulls both into a fresh cas store, and serves that store with
`cas serve --offline`. Then, as medians of ``--runs``:
  - `skopeo copy docker://... oci:DIR` of the 640 MiB image from cas serve vs from the registry
    (target <= 1.0x);
  - 16 such copies of the 64 MiB image at once: all must succeed; total wall time against the
    registry's (target <= 1.2x);
  - pull-through cold: the 64 MiB image through `cas serve` on an empty store against the same
    through a second docker-registry in proxy mode with empty storage (target <= 1.0x);
  - the peak RSS (VmHWM) of the cas serve processes (target < 200 MiB).

    .venv/bin/python benchmarks/bench_serve.py [--runs 3] [--scale 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cases import Row
from harness import CAS, compile_cas, verdict

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import free_port, require, wait_until

MiB = 1 << 20
CLIENTS = 16


class Serve:
    """A `cas serve` process on a free port, its peak RSS read before it stops."""

    def __init__(self, home: Path, *args: str) -> None:
        self.host = f"127.0.0.1:{free_port()}"
        self.log = home.parent / f"serve-{self.host.rpartition(':')[2]}.log"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CAS_HOME=str(home), CAS_HOSTS_DIR="", CAS_REGISTRIES_CONF="", CAS_DOCKER_DAEMON_JSON="")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([CAS, "serve", "--listen", self.host, *args], env=env, stderr=out)
        wait_until(lambda: "serving " in self.log.read_text(), timeout=30, what="cas serve")

    def stop(self) -> float:
        """Stop it; its peak RSS in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
        self.proc.terminate()
        self.proc.wait(30)
        return peak


def copy(skopeo: str, ref: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:1"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo copy {ref} failed: {proc.stderr.strip()[-300:]}")
    return time.perf_counter() - started


def crowd(skopeo: str, ref: str, work: Path) -> float:
    """Wall seconds for CLIENTS copies of ``ref`` at once; raises if any fails."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda n: copy(skopeo, ref, work / f"client{n}"), range(CLIENTS)))
    seconds = time.perf_counter() - started
    for n in range(CLIENTS):
        shutil.rmtree(work / f"client{n}", ignore_errors=True)
    return seconds


def push(registry: Registry, name: str, layers: int, layer_size: int, seed: int) -> None:
    image = images.Image([images.random_layer(layer_size, seed=seed + i) for i in range(layers)])
    images.push(registry, f"bench/{name}", "1", image)


def measure(work: Path, runs: int, scale: float) -> dict:
    skopeo = require("skopeo", "skopeo")
    with Registry(work / "registry") as registry:
        push(registry, "big", 10, int(64 * MiB * scale), seed=500)
        push(registry, "small", 2, int(32 * MiB * scale), seed=600)
        home = work / "store"
        env = dict(os.environ, CAS_HOME=str(home))
        for name in ("big", "small"):
            subprocess.run([CAS, "pull", "-q", f"{registry.host}/bench/{name}:1"], env=env, check=True)
        served = Serve(home, "--offline", "--log-format", "json", "--upstream", f"lab={registry.host}")
        try:
            big_cas, big_reg, crowd_cas, crowd_reg = [], [], [], []
            for run in range(runs):  # each goes first in turn: neither always meets the other's page cache
                for which in (0, 1) if run % 2 == 0 else (1, 0):
                    if which == 0:
                        big_cas.append(copy(skopeo, f"{served.host}/lab/bench/big:1", work / "out"))
                        crowd_cas.append(crowd(skopeo, f"{served.host}/lab/bench/small:1", work))
                    else:
                        big_reg.append(copy(skopeo, f"{registry.host}/bench/big:1", work / "out"))
                        crowd_reg.append(crowd(skopeo, f"{registry.host}/bench/small:1", work))
        finally:
            rss = [served.stop()]
        cold_cas, cold_proxy = [], []
        for run in range(runs):
            fresh = work / f"cold{run}"
            through = Serve(fresh / "home", "--log-format", "json", "--upstream", f"lab={registry.host}")
            try:
                cold_cas.append(copy(skopeo, f"{through.host}/lab/bench/small:1", work / "out"))
            finally:
                rss.append(through.stop())
            with Registry(fresh / "proxy", proxy_remote=registry.url) as proxy:
                cold_proxy.append(copy(skopeo, f"{proxy.host}/bench/small:1", work / "out"))
            shutil.rmtree(fresh, ignore_errors=True)
    med = statistics.median
    return {
        "scale": scale,
        "big_cas_s": med(big_cas),
        "big_registry_s": med(big_reg),
        "crowd_cas_s": med(crowd_cas),
        "crowd_registry_s": med(crowd_reg),
        "cold_cas_s": med(cold_cas),
        "cold_proxy_s": med(cold_proxy),
        "peak_rss_mib": max(rss),
    }


def report(f: dict) -> bool:
    big = f["big_cas_s"] / f["big_registry_s"]
    crowd_ratio = f["crowd_cas_s"] / f["crowd_registry_s"]
    cold = f["cold_cas_s"] / f["cold_proxy_s"]
    size = 640 * f["scale"]
    print(
        f"skopeo copy of {size:.0f} MiB/10 layers: cas serve {f['big_cas_s']:.2f} s vs docker-registry "
        f"{f['big_registry_s']:.2f} s = {big:.2f}x (target <= 1.0x: {verdict(big <= 1.0)})"
    )
    print(
        f"{CLIENTS} clients of {size / 10:.0f} MiB at once: cas serve {f['crowd_cas_s']:.2f} s vs docker-registry "
        f"{f['crowd_registry_s']:.2f} s = {crowd_ratio:.2f}x (target <= 1.2x: {verdict(crowd_ratio <= 1.2)})"
    )
    print(
        f"pull-through cold, {size / 10:.0f} MiB: cas serve {f['cold_cas_s']:.2f} s vs docker-registry proxy "
        f"{f['cold_proxy_s']:.2f} s = {cold:.2f}x (target <= 1.0x: {verdict(cold <= 1.0)})"
    )
    print(f"cas serve peak RSS: {f['peak_rss_mib']:.0f} MiB (target < 200 MiB: {verdict(f['peak_rss_mib'] < 200)})")
    f.update(big_ratio=big, crowd_ratio=crowd_ratio, cold_ratio=cold)
    return big <= 1.0 and crowd_ratio <= 1.2 and cold <= 1.0 and f["peak_rss_mib"] < 200


def rows(runs: int, scale: float) -> list[Row]:
    """The figures as benchmarks/run.py's rows (the "skopeo" column is the distribution registry)."""
    work = Path(tempfile.mkdtemp(prefix="cas-bench-serve-"))
    try:
        f = measure(work, runs, scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = 640 * scale
    return [
        _row(f"serve: skopeo copy {size:.0f} MiB vs docker-registry", f["big_cas_s"], f["big_registry_s"], 1.0, f),
        _row(
            f"serve: {CLIENTS} clients x {size / 10:.0f} MiB vs docker-registry",
            f["crowd_cas_s"],
            f["crowd_registry_s"],
            1.2,
            f,
        ),
        _row(
            f"serve: pull-through cold {size / 10:.0f} MiB vs registry proxy",
            f["cold_cas_s"],
            f["cold_proxy_s"],
            1.0,
            f,
        ),
    ]


def _row(case: str, cas: float, peer: float, limit: float, f: dict) -> Row:
    return Row(
        case,
        cas,
        peer,
        target=f"<= {limit}x",
        ok=cas / peer <= limit and f["peak_rss_mib"] < 200,
        rss_mib=f["peak_rss_mib"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every image size (e.g. 0.1 to try it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-serve-"))
    try:
        figures = measure(work, args.runs, args.scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = report(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
