"""Benchmark the size budget: a pull that evicts 1,000 small images, against the same pull without a budget.

The store is bench_gc.py's (1,000 images, 3,300 blobs indexed, LRU times spread over 30 days);
each run starts from a fresh copy of it. Both cases pull the same 8 MiB image from a local
docker-registry in a fresh process; with ``--max-size`` just above that image, the pull then
evicts every other image. The difference of the medians is what the eviction adds.
Target: under 0.5 s.

    .venv/bin/python benchmarks/bench_budget.py [--images 1000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_gc import build
from harness import CAS, compile_cas, timed

from tests.support import images
from tests.support.registry import Registry

TARGET_SECONDS = 0.5
MiB = 1 << 20


def pull_once(template: Path, work: Path, ref: str, *budget: str) -> tuple[float, dict]:
    """One pull into a fresh copy of the built store: wall seconds, and the pull's JSON."""
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home, symlinks=True)
    env = {"CAS_HOME": str(home), "CAS_CONFIG": str(work / "no-config.toml"), "NO_PROXY": "127.0.0.1"}
    out = work / "pull.json"
    with out.open("wb") as fh:
        seconds = timed([CAS, "pull", "--json", *budget, ref], env=env, stdout=fh)
    return seconds, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-budget-"))
    try:
        built = build(work / "template", args.images, int(3.3 * args.images))  # about 3 blobs of its own each
        image = images.Image([images.random_layer(8 * MiB, seed=900)])
        with Registry(work / "registry") as registry:
            images.push(registry, "bench/budgeted", "1", image)
            ref = f"{registry.host}/bench/budgeted:1"
            budget = str(int(image.size * 1.05))  # its low-water mark is below the image: every other one goes
            plain, evicting, evicted = [], [], []
            for _ in range(args.runs):
                plain.append(pull_once(work / "template", work, ref)[0])
                seconds, body = pull_once(work / "template", work, ref, "--max-size", budget)
                evicting.append(seconds)
                evicted.append(body["budget"])
        added = statistics.median(evicting) - statistics.median(plain)
        report = {
            "store": built,
            "image_bytes": image.size,
            "max_size": int(budget),
            "evicted_images": evicted[-1]["evicted_images"],
            "evicted_bytes": evicted[-1]["evicted_bytes"],
            "eviction_seconds": statistics.median(e["seconds"] for e in evicted),
            "plain_seconds": statistics.median(plain),
            "budget_seconds": statistics.median(evicting),
            "added_seconds": round(added, 3),
            "target_seconds": TARGET_SECONDS,
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(
                f"pull {image.size / MiB:.0f} MiB: {report['plain_seconds']:.3f} s without a budget, "
                f"{report['budget_seconds']:.3f} s evicting {report['evicted_images']} images "
                f"({report['evicted_bytes'] / MiB:.1f} MiB): +{added:.3f} s (target < {TARGET_SECONDS} s)"
            )
        if report["evicted_images"] < args.images or added >= TARGET_SECONDS:
            raise SystemExit(f"missed: evicted {report['evicted_images']} images, added {added:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
