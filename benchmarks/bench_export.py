"""Export benchmark: `cas export` against `skopeo copy oci:DIR docker-archive:` and the floor.

In one run, on one machine, with the same blobs in the page cache:
  - cas:    `cas export REF -o FILE` (a docker-archive; a fresh process each time)
  - skopeo: `skopeo copy oci:DIR:REF docker-archive:FILE:REF` (DIR from `skopeo copy docker://... oci:DIR`)
  - floor:  a bare interpreter start (`python -c pass`) plus `cat` of the same blob files into one file

It starts its own docker-registry on 127.0.0.1, pushes an image of incompressible data in
several layers (default 64 MiB in 4 layers plus busybox), pulls it with cas into a temp
CAS_HOME, then prints the median of N runs, the ratios (targets: cas <= 0.5x skopeo and
<= 1.5x floor) and the peak RSS of each `cas export` (from wait4), for this image and for a
small one, to show RSS stays flat in image size.

    .venv/bin/python benchmarks/bench_export.py [--runs 9] [--mib 64] [--layers 4] [--json]
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
from pathlib import Path

from harness import CAS, PYTHON, compile_cas, peak_rss_kib, timed

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import require

# The same export without the CLI layer: what cas.export itself costs, start-up included.
LIBRARY_EXPORT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from cas.export import export\n"
    "from cas.reference import parse\n"
    "from cas.store import Store\n"
    "export(Store(), [parse(sys.argv[1])], Path(sys.argv[2]))\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--mib", type=int, default=64, help="incompressible MiB in the big image")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    skopeo = require("skopeo", "skopeo")
    cat = require("cat", "coreutils")
    sync = require("sync", "coreutils")
    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-export-"))
    try:
        with Registry(work / "registry") as registry:
            per_layer = args.mib * (1 << 20) // args.layers
            big = images.Image(
                [images.busybox_layer()] + [images.random_layer(per_layer, seed=i) for i in range(args.layers)]
            )
            small = images.Image([images.busybox_layer(), images.random_layer(1 << 20, seed=99)])
            images.push(registry, "bench/big", "1", big)
            images.push(registry, "bench/small", "1", small)
            big_ref, small_ref = f"{registry.host}/bench/big:1", f"{registry.host}/bench/small:1"
            digests = big.digests
            del big, small  # the benchmark process stays small

            env = dict(os.environ, CAS_HOME=str(work / "home"))
            subprocess.run([CAS, "pull", "-q", big_ref, small_ref], env=env, check=True)
            layout = work / "oci"
            subprocess.run(
                [skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{big_ref}", f"oci:{layout}:big"], check=True
            )
            blob_files = [str(work / "home" / "v1" / "blobs" / "sha256" / d.removeprefix("sha256:")) for d in digests]
            total = sum(os.path.getsize(f) for f in blob_files)

            out = work / "out"
            out.mkdir()
            results: dict[str, list[float]] = {
                "cas": [],
                "skopeo": [],
                "floor": [],
                "floor+fsync": [],
                "cas --version": [],
                "cas library": [],
            }
            for _ in range(args.runs):
                for target in out.iterdir():
                    target.unlink()
                results["cas"].append(timed([CAS, "export", "-q", big_ref, "-o", str(out / "cas.tar")], env=env))
                results["cas --version"].append(timed([CAS, "--version"], env=env))
                results["cas library"].append(
                    timed([PYTHON, "-c", LIBRARY_EXPORT, big_ref, str(out / "lib.tar")], env=env)
                )
                results["skopeo"].append(
                    timed([skopeo, "copy", "-q", f"oci:{layout}:big", f"docker-archive:{out / 'skopeo.tar'}:{big_ref}"])
                )
                start = timed([PYTHON, "-c", "pass"])
                with open(out / "floor.tar", "wb") as fh:
                    copy = timed([cat, *blob_files], stdout=fh)
                results["floor"].append(start + copy)
                results["floor+fsync"].append(start + copy + timed([sync, str(out / "floor.tar")]))
            rss = {
                "big": peak_rss_kib([CAS, "export", "-q", big_ref, "-o", str(out / "rss.tar")], env, work),
                "small": peak_rss_kib([CAS, "export", "-q", small_ref, "-o", str(out / "rss.tar")], env, work),
            }

        med = {name: statistics.median(values) for name, values in results.items()}
        figures = {
            "image_bytes": total,
            "layers": args.layers + 1,
            "runs": args.runs,
            "median_seconds": med,
            "cas_vs_skopeo": med["cas"] / med["skopeo"],
            "cas_vs_floor": med["cas"] / med["floor"],
            "cas_peak_rss_kib": rss,
            "archive_bytes": (out / "cas.tar").stat().st_size,
        }
        mib = total / (1 << 20)
        print(f"image: {mib:.1f} MiB in {args.layers + 1} layers; median of {args.runs} runs (page cache warm)")
        for name in med:
            rate = mib / med[name]
            print(f"  {name:14} {med[name] * 1000:8.1f} ms  {rate:7.0f} MiB/s")
        print(f"  cas / skopeo = {figures['cas_vs_skopeo']:.2f}x  (target <= 0.5x)")
        print(f"  cas / floor  = {figures['cas_vs_floor']:.2f}x  (target <= 1.5x)")
        print(
            f"  cas / (floor + fsync of the output, which cas does before its rename) = {med['cas'] / med['floor+fsync']:.2f}x"
        )
        print(
            f"  the CLI layer costs {(med['cas'] - med['cas library']) * 1000:.0f} ms of cas's time "
            f"(cas library = the same export from a bare `python -c`: {med['cas library'] / med['floor']:.2f}x floor)"
        )
        print(
            f"  cas export peak RSS: {figures['cas_peak_rss_kib']['big'] / 1024:.1f} MiB for {mib:.0f} MiB, "
            f"{rss['small'] / 1024:.1f} MiB for the 1 MiB image"
        )
        if args.json:
            print(json.dumps(figures, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
