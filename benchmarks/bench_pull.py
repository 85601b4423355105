"""Pull benchmark: `cas pull` against `skopeo copy docker://... oci:DIR` on one local registry.

In one run it starts a docker-registry on 127.0.0.1, pushes an image of incompressible data
(default: one 64 MiB layer plus three 4 MiB layers and busybox, ~77 MiB), and times, as the
median of N fresh processes:
  - cold: `cas pull` into an empty CAS_HOME   vs  `skopeo copy` into an empty oci: directory
  - warm by tag: `cas pull` again (one manifest request)  vs  `skopeo copy` into the same directory
  - warm by digest: `cas pull name@digest` (must make no request at all)
and prints the ratios against the targets, the registry requests each warm pull made (from
the registry's own log), and the peak RSS of `cas pull` for this image and a small one.

    .venv/bin/python benchmarks/bench_pull.py [--runs 7] [--big-mib 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import CAS, PYTHON, compile_cas, median_ms, peak_rss_kib, timed, verdict

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import require


def build(registry: Registry, big_mib: int) -> tuple[str, str, str, int]:
    layers = [images.busybox_layer(), images.random_layer(big_mib << 20, seed=1)]
    layers += [images.random_layer(4 << 20, seed=10 + i) for i in range(3)]
    big = images.Image(layers)
    small = images.Image([images.busybox_layer(), images.random_layer(1 << 20, seed=99)])
    images.push(registry, "bench/pull", "1", big)
    images.push(registry, "bench/small", "1", small)
    host = registry.host
    return f"{host}/bench/pull:1", f"{host}/bench/pull@{big.digest}", f"{host}/bench/small:1", big.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--big-mib", type=int, default=64, help="size of the largest layer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    skopeo = require("skopeo", "skopeo")
    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-pull-"))
    try:
        with Registry(work / "registry") as registry:
            ref, by_digest, small_ref, size = build(registry, args.big_mib)
            home = work / "home"
            env = dict(os.environ, CAS_HOME=str(home))
            layout = work / "oci"
            skopeo_copy = [skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:bench"]
            t = {
                k: []
                for k in ("cas cold", "skopeo cold", "cas warm tag", "skopeo warm", "cas warm digest", "python start")
            }
            requests = {"warm tag": [], "warm digest": []}
            for _ in range(args.runs):
                shutil.rmtree(home, ignore_errors=True)
                shutil.rmtree(layout, ignore_errors=True)
                t["cas cold"].append(timed([CAS, "pull", "-q", ref], env=env))
                t["skopeo cold"].append(timed(skopeo_copy))
                mark = registry.mark()
                t["cas warm tag"].append(timed([CAS, "pull", "-q", ref], env=env))
                requests["warm tag"].append(len(registry.requests(mark)))
                t["skopeo warm"].append(timed(skopeo_copy))
                mark = registry.mark()
                t["cas warm digest"].append(timed([CAS, "pull", "-q", by_digest], env=env))
                requests["warm digest"].append(len(registry.requests(mark)))
                t["python start"].append(timed([PYTHON, "-c", "pass"]))
            shutil.rmtree(home)
            rss_big = peak_rss_kib([CAS, "pull", "-q", ref], env, work)
            rss_small = peak_rss_kib([CAS, "pull", "-q", small_ref], env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: median_ms(values) for name, values in t.items()}
    cold_ratio = med["cas cold"] / med["skopeo cold"]
    warm_ratio = med["cas warm tag"] / med["skopeo warm"]
    figures = {
        "image_bytes": size,
        "runs": args.runs,
        "median_ms": med,
        "cold_cas_vs_skopeo": cold_ratio,
        "warm_tag_cas_vs_skopeo": warm_ratio,
        "registry_requests": {k: max(v) for k, v in requests.items()},
        "peak_rss_kib": {"big": rss_big, "small": rss_small},
    }
    print(f"image: {size / (1 << 20):.1f} MiB (largest layer {args.big_mib} MiB); median of {args.runs} runs")
    for name, value in med.items():
        print(f"  {name:16} {value:8.1f} ms")
    print(f"  cold: cas / skopeo = {cold_ratio:.2f}x  (target <= 1.0x: {verdict(cold_ratio <= 1.0)})")
    print(f"  warm by tag: cas / skopeo = {warm_ratio:.2f}x  (target <= 4.0x: {verdict(warm_ratio <= 4.0)})")
    tag_reqs, digest_reqs = figures["registry_requests"]["warm tag"], figures["registry_requests"]["warm digest"]
    print(
        f"  registry requests: warm by tag {tag_reqs} (target 1: {verdict(tag_reqs == 1)}), "
        f"warm by digest {digest_reqs} (target 0: {verdict(digest_reqs == 0)})"
    )
    print(
        f"  peak RSS of cas pull: {rss_big / 1024:.1f} MiB for this image, {rss_small / 1024:.1f} MiB for a 2 MiB one "
        f"(target < 100 MiB: {verdict(rss_big < 100 * 1024)})"
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
