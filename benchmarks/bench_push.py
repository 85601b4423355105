"""Push benchmark: `cas push` against `skopeo copy oci:$CAS_HOME/v1:REF docker://DEST`.

Both read the same bytes (skopeo through the store's OCI layout) and push them to a local
docker-registry, in fresh processes, in turn, in one run:
  - cold: to a registry that has none of the blobs (a new registry for each tool and run, so
    neither cas's memory of earlier pushes nor skopeo's blob-info cache can turn an upload
    into a mount);
  - warm: the same push again: every blob is there (HEAD only) and the manifest is put again.
No target is set by the issue; the figures and ratios are printed for the record.

    .venv/bin/python benchmarks/bench_push.py [--runs 3] [--mib 64] [--layers 2] [--json]
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

from harness import CAS, compile_cas, timed

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import require


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64, help="incompressible MiB in the image")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    skopeo = require("skopeo", "skopeo")
    compile_cas()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-push-"))
    try:
        home = work / "home"
        env = dict(os.environ, CAS_HOME=str(home), NO_PROXY="*")
        with Registry(work / "source") as source:
            per_layer = args.mib * (1 << 20) // args.layers
            layers = [images.random_layer(per_layer, seed=500 + i) for i in range(args.layers)]
            images.push(source, "bench/push", "1", images.Image(layers))
            ref = f"{source.host}/bench/push:1"
            del layers
            subprocess.run([CAS, "pull", "-q", ref], env=env, check=True)
        oci = f"oci:{home / 'v1'}:{ref}"
        times: dict[str, list[float]] = {"cas cold": [], "skopeo cold": [], "cas warm": [], "skopeo warm": []}
        for run in range(args.runs):
            for tool in ("cas", "skopeo"):
                with Registry(work / f"dest-{tool}-{run}") as dest:
                    target = f"{dest.host}/bench/pushed:1"
                    if tool == "cas":
                        cmd = [CAS, "push", "-q", ref, target]
                    else:
                        cmd = [skopeo, "copy", "-q", "--dest-tls-verify=false", "--preserve-digests", oci]
                        cmd.append(f"docker://{target}")
                    times[f"{tool} cold"].append(timed(cmd, env=env))
                    times[f"{tool} warm"].append(timed(cmd, env=env))
                shutil.rmtree(work / f"dest-{tool}-{run}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"push of {args.mib} MiB in {args.layers} layer(s), medians of {args.runs} runs")
    for case in ("cold", "warm"):
        cas, sko = med[f"cas {case}"], med[f"skopeo {case}"]
        print(f"  {case:5}  cas {cas * 1000:7.0f} ms   skopeo {sko * 1000:7.0f} ms   ratio {cas / sko:.2f}x")
    if args.json:
        print(json.dumps({name: round(value, 4) for name, value in med.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
