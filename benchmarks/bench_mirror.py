"""Mirror benchmark: 4 simulated build hosts pull one image through a pull-through registry.

In one run it starts an upstream docker-registry and a second one configured as its
pull-through cache (``proxy: remoteurl:``), pushes an image of incompressible data to the
upstream (default: one 64 MiB layer plus three 4 MiB layers, ~76 MiB), writes a containerd
hosts.toml that names the mirror for the upstream, and runs ``cas pull`` on 4 "hosts" (4
fresh CAS_HOMEs, one after another). It prints, from the registries' own access logs:
  - the bytes the upstream served in all (target: the image's bytes do not grow with the
    hosts; distribution 2.8 fetches each missed blob twice, once for the client and once for
    its own storage, so host 1 costs it about two copies and hosts 2..4 nothing);
  - the requests that reached the upstream other than through the mirror (target 0);
  - the time of hosts 2..4 against host 1 (the mirror's own storage against a miss).
The mirror reaches the upstream through a proxy that caps each connection (default 20 MB/s),
as a WAN link to a public registry would; the hosts reach the mirror on loopback, as a
build fleet reaches its local mirror.

    .venv/bin/python benchmarks/bench_mirror.py [--big-mib 64] [--rounds 3] [--wan-mbps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from harness import CAS, compile_cas, timed, verdict

from tests.support import images
from tests.support.proxy import FaultProxy
from tests.support.registry import Registry

HOSTS = 4


def build(upstream: Registry, big_mib: int, seed: int) -> tuple[str, int]:
    layers = [images.random_layer(big_mib << 20, seed=seed)]
    layers += [images.random_layer(4 << 20, seed=seed + 1 + i) for i in range(3)]
    image = images.Image(layers)
    images.push(upstream, "bench/mirror", str(seed), image)
    return f"{upstream.host}/bench/mirror:{seed}", sum(b.size for b in image.blobs) + image.manifest_blob.size


def one_round(work: Path, big_mib: int, seed: int, wan_mbps: float) -> dict:
    """A fresh upstream, mirror and image: 4 hosts pull it, one after another."""
    with Registry(work / "upstream") as upstream, FaultProxy(upstream) as wan:
        wan.throttle(int(wan_mbps * 1e6))
        ref, size = build(upstream, big_mib, seed)
        with Registry(work / "mirror", proxy_remote=wan.url) as mirror:
            hosts_dir = work / "hosts.d"
            (hosts_dir / upstream.host).mkdir(parents=True)
            (hosts_dir / upstream.host / "hosts.toml").write_text(
                f'server = "{upstream.url}"\n\n[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n'
            )
            base = dict(os.environ, CAS_HOSTS_DIR=str(hosts_dir), CAS_REGISTRIES_CONF="", CAS_DOCKER_DAEMON_JSON="")
            start = upstream.mark()
            wan.reset()
            seconds, upstream_bytes = [], []
            for host in range(1, HOSTS + 1):
                mark = upstream.mark()
                seconds.append(timed([CAS, "pull", "-q", ref], env=dict(base, CAS_HOME=str(work / f"host{host}"))))
                upstream_bytes.append(upstream.blob_bytes_served(mark))
            # Every request the mirror makes crosses the WAN proxy; anything else reached the upstream directly.
            direct = len(upstream.requests(start)) - len(wan.requests)
            mirror_served = sum(
                r.bytes for r in mirror.requests(0) if r.kind == "blob" and r.method == "GET" and r.status == 200
            )
    return {
        "image_bytes": size,
        "seconds": seconds,
        "upstream_blob_bytes_per_host": upstream_bytes,
        "direct_requests_to_upstream": direct,
        "mirror_blob_bytes_served": mirror_served,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mib", type=int, default=64, help="size of the largest layer")
    parser.add_argument("--rounds", type=int, default=3, help="fresh upstream+mirror+image per round")
    parser.add_argument("--wan-mbps", type=float, default=20.0, help="per-connection cap between mirror and upstream")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    compile_cas()
    rounds = []
    for seed in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="cas-bench-mirror-"))
        try:
            rounds.append(one_round(work, args.big_mib, 100 + 10 * seed, args.wan_mbps))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    size = rounds[0]["image_bytes"]
    first = statistics.median(r["seconds"][0] for r in rounds)
    later = statistics.median(s for r in rounds for s in r["seconds"][1:])
    total_up = max(sum(r["upstream_blob_bytes_per_host"]) for r in rounds)
    later_up = max(sum(r["upstream_blob_bytes_per_host"][1:]) for r in rounds)
    cas_to_upstream = max(r["direct_requests_to_upstream"] for r in rounds)
    ratio = later / first
    print(
        f"image: {size / (1 << 20):.1f} MiB; {HOSTS} hosts through one pull-through mirror "
        f"(mirror to upstream capped at {args.wan_mbps:g} MB/s per connection); {args.rounds} rounds"
    )
    for i, r in enumerate(rounds):
        times = " ".join(f"{s * 1000:.0f}" for s in r["seconds"])
        up = " ".join(f"{b / (1 << 20):.1f}" for b in r["upstream_blob_bytes_per_host"])
        print(f"  round {i + 1}: host 1..{HOSTS} ms: {times}; upstream MiB per host: {up}")
    print(
        f"  upstream served {total_up / (1 << 20):.1f} MiB in all = {total_up / size:.2f} image copies "
        f"(distribution fetches a miss twice); hosts 2..{HOSTS} added {later_up} bytes "
        f"(target 0: {verdict(later_up == 0)})"
    )
    print(
        f"  requests that reached the upstream not through the mirror: {cas_to_upstream} "
        f"(target 0: {verdict(cas_to_upstream == 0)})"
    )
    print(
        f"  host 2..{HOSTS} vs host 1 (median): {later * 1000:.0f} ms vs {first * 1000:.0f} ms = {ratio:.2f}x "
        f"(target < 1.0x: {verdict(ratio < 1.0)})"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rounds": rounds,
                    "host1_ms": first * 1000,
                    "later_hosts_ms": later * 1000,
                    "later_vs_first": ratio,
                    "upstream_copies": total_up / size,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
