"""Import benchmark: `cas import` against `skopeo copy docker-archive:... oci:...`, and delta archives.

In one run, on one machine, with the archive in the page cache:
  - cas file:   `cas import FILE` into an empty store (a fresh CAS_HOME each run)
  - cas stdin:  `cat FILE | cas import -` (a pipe: nothing is staged whole)
  - skopeo:     `skopeo copy docker-archive:FILE oci:DIR:big` into an empty DIR
Targets: each cas figure at most 0.6x skopeo's.

Delta: a second image is the first plus one new layer (default 8 MiB); `cas export NEW
--since OLD` is timed against the full `cas export NEW`, and its size compared with the
new layer's bytes (target: within 1%).

It starts its own docker-registry on 127.0.0.1 and pushes incompressible images (default
64 MiB in 4 layers plus busybox), which cas pulls and exports to make the archive.

    .venv/bin/python benchmarks/bench_import.py [--runs 7] [--mib 64] [--layers 4] [--new-mib 8] [--json]
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

from harness import CAS, compile_cas, timed, verdict

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import require


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mib", type=int, default=64, help="incompressible MiB in the image")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-mib", type=int, default=8, help="MiB of the layer the delta carries")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    skopeo = require("skopeo", "skopeo")
    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-import-"))
    try:
        with Registry(work / "registry") as registry:
            per_layer = args.mib * (1 << 20) // args.layers
            layers = [images.busybox_layer()] + [images.random_layer(per_layer, seed=i) for i in range(args.layers)]
            new_layer = images.random_layer(args.new_mib << 20, seed=1000, path="new.bin")
            images.push(registry, "bench/app", "old", images.Image(layers))
            images.push(registry, "bench/app", "new", images.Image([*layers, new_layer]))
            old_ref, new_ref = f"{registry.host}/bench/app:old", f"{registry.host}/bench/app:new"
            new_bytes = new_layer.size
            del layers, new_layer

            sender = dict(os.environ, CAS_HOME=str(work / "sender"))
            subprocess.run([CAS, "pull", "-q", old_ref, new_ref], env=sender, check=True)
            archive = work / "old.tar"
            subprocess.run([CAS, "export", "-q", old_ref, "-o", str(archive)], env=sender, check=True)

            results: dict[str, list[float]] = {"cas file": [], "cas stdin": [], "skopeo": [], "full": [], "delta": []}
            receiver = dict(os.environ, CAS_HOME=str(work / "receiver"))
            layout = work / "oci"
            pipe = f"cat {archive} | {CAS} import -q -"
            for _ in range(args.runs):
                for name, cmd in (("cas file", [CAS, "import", "-q", str(archive)]), ("cas stdin", ["sh", "-c", pipe])):
                    shutil.rmtree(work / "receiver", ignore_errors=True)
                    results[name].append(timed(cmd, env=receiver))
                shutil.rmtree(layout, ignore_errors=True)
                results["skopeo"].append(
                    timed([skopeo, "copy", "-q", f"docker-archive:{archive}", f"oci:{layout}:big"])
                )
                full, delta = work / "new.tar", work / "delta.tar"
                results["full"].append(timed([CAS, "export", "-q", new_ref, "-o", str(full)], env=sender))
                results["delta"].append(
                    timed([CAS, "export", "-q", new_ref, "--since", old_ref, "-o", str(delta)], env=sender)
                )
            # the delta must import where the old image is
            subprocess.run([CAS, "import", "-q", str(delta)], env=receiver, check=True)

        med = {name: statistics.median(values) for name, values in results.items()}
        figures = {
            "archive_bytes": archive.stat().st_size,
            "runs": args.runs,
            "median_seconds": med,
            "cas_file_vs_skopeo": med["cas file"] / med["skopeo"],
            "cas_stdin_vs_skopeo": med["cas stdin"] / med["skopeo"],
            "full_bytes": full.stat().st_size,
            "delta_bytes": delta.stat().st_size,
            "new_layer_bytes": new_bytes,
            "delta_vs_new_layer": delta.stat().st_size / new_bytes,
        }
        mib = figures["archive_bytes"] / (1 << 20)
        print(f"archive: {mib:.1f} MiB ({args.layers + 1} layers); median of {args.runs} runs (page cache warm)")
        for name in ("cas file", "cas stdin", "skopeo"):
            print(f"  {name:10} {med[name] * 1000:8.1f} ms  {mib / med[name]:7.0f} MiB/s")
        for name in ("file", "stdin"):
            ratio = figures[f"cas_{name}_vs_skopeo"]
            print(f"  cas {name} / skopeo = {ratio:.2f}x  (target <= 0.6x: {verdict(ratio <= 0.6)})")
        over = figures["delta_vs_new_layer"] - 1
        print(
            f"delta of {new_ref.rsplit('/', 1)[1]} --since {old_ref.rsplit('/', 1)[1]}: "
            f"{figures['delta_bytes']:,} bytes for a {new_bytes:,}-byte new layer (+{over * 100:.2f}%, "
            f"target <= 1%: {verdict(over <= 0.01)}); the full archive is {figures['full_bytes']:,} bytes"
        )
        print(f"  export: full {med['full'] * 1000:.1f} ms, delta {med['delta'] * 1000:.1f} ms")
        if args.json:
            print(json.dumps(figures, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
