"""Every benchmark, one command, one table: cas against skopeo on real local servers.

    .venv/bin/python benchmarks/run.py [--runs 3] [--only pull,capped,...,mirror] [--json FILE] [--baseline DIR]

It starts a docker-registry on 127.0.0.1, pushes incompressible images (64 MiB in 2 layers,
640 MiB in 10 layers, 256 MiB in 1 layer), and times, as medians of ``--runs`` fresh processes:
- cold and warm (by tag) pulls of the 64 MiB and 640 MiB images: `cas pull` vs
  `skopeo copy docker://... oci:DIR`, and `cas images` on the store each pull leaves;
- the 256 MiB and 640 MiB pulls through a proxy capping each connection at 20 MB/s;
- `cas export` of the 640 MiB image vs `skopeo copy oci: docker-archive:` and `cat` + `fsync`
  of its blobs, on this filesystem (ext4 here) and on an XFS with reflinks that it makes and
  loop-mounts itself (root); when it cannot, the row says NOT MEASURED and why, and the
  command exits 1: never a quiet skip;
- `cas --version` vs `skopeo --version` (floor: the interpreter alone);
- `cas images` on a store of 1,000 images (group images);
- a warm `cas pull -f` of 20 cached images (one process) vs 20 warm `skopeo copy` runs;
- the other scripts here, as rows: bench_gc.py (du, prune, verify on 10,000 blobs),
  bench_import.py (`cas import` vs `skopeo copy docker-archive: oci:`, delta size),
  bench_push.py (`cas push` vs skopeo), bench_mirror.py (hosts behind a pull-through mirror),
  bench_budget.py (a pull whose size budget evicts 1,000 small images, against the same pull without one)
  and bench_serve.py (`cas serve` vs docker-registry on the same blobs; its peer column is the registry).
With ``--baseline DIR`` (another checkout of cas, with its own .venv: an older commit), the
start-up rows (--version, the warm pulls, `cas images`) also time that checkout's cas, in turn
with this one's in the same run, and the table gives the ratios against it: wall time, and CPU
time (user + sys, GNU time's), which a busy machine disturbs less.
Peak RSS is GNU time's, the largest over cas's runs of that row. Wall-clock figures: run it on
a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import cases
from cases import Images, MiB, Row, Runner
from harness import ROOT, compile_cas

from tests.support.registry import Registry

GROUPS = (
    "pull",
    "capped",
    "export",
    "xfs",
    "version",
    "images",
    "gc",
    "import",
    "push",
    "mirror",
    "budget",
    "serve",
    "set",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per case (medians); --version runs 7x this")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every image size (e.g. 0.1 to try the runner)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="another checkout of cas (with its .venv) to time beside this one"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(GROUPS):
        parser.error(f"unknown group(s): {', '.join(sorted(only - set(GROUPS)))}")
    baseline = str(args.baseline.resolve() / ".venv" / "bin" / "cas") if args.baseline else None
    if baseline and not Path(baseline).exists():
        parser.error(f"--baseline: no {baseline}: run `bash scripts/install` in that checkout")

    compile_cas()
    if args.baseline:
        compile_cas(args.baseline.resolve())
    rows: list[Row] = []
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cas-bench-"))
    try:
        runner = Runner(work)
        if "version" in only:
            rows.append(cases.version(runner, 7 * args.runs, baseline))
        if "images" in only:
            rows.append(cases.many_images(runner, work, args.runs, baseline))
        if "set" in only:
            with Registry(work / "registry-set") as registry:
                rows.append(cases.image_set(runner, registry, work, args.runs))
        if only & {"pull", "capped", "export", "xfs"}:
            with Registry(work / "registry") as registry:
                imgs = push_images(registry, only, args.scale)
                if "pull" in only:
                    rows += cases.pulls(runner, imgs, work, args.runs, baseline)
                if "capped" in only:
                    rows += cases.capped_pulls(runner, imgs, work, args.runs)
                if "export" in only:
                    rows.append(cases.export(runner, imgs, work / "ext4", args.runs, "on ext4", reflinks=False))
                if "xfs" in only:
                    rows.append(xfs_export(runner, imgs, work, args.runs))
        if "gc" in only:
            rows += cases.gc(ROOT)
        if "import" in only:
            rows += cases.imports(ROOT, args.runs)
        if "push" in only:
            rows += cases.pushes(ROOT, args.runs)
        if "mirror" in only:
            rows += cases.mirrors(ROOT, args.runs)
        if "budget" in only:
            rows += cases.budget(ROOT, args.runs)
        if "serve" in only:
            import bench_serve

            rows += bench_serve.rows(args.runs, args.scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s in all; medians of {args.runs} runs (--version: {7 * args.runs}).")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    not_measured = [r for r in rows if r.note.startswith("NOT MEASURED")]
    for row in not_measured:
        print(f"\n*** {row.case}: {row.note} ***", file=sys.stderr)
    return 1 if not_measured else 0


def push_images(registry: Registry, only: set[str], scale: float) -> Images:
    imgs = Images(registry)
    imgs.push("big", [int(64 * MiB * scale)] * 10, seed=100)  # 640 MiB in 10 layers
    if "pull" in only:
        imgs.push("small", [int(32 * MiB * scale)] * 2, seed=200)  # 64 MiB in 2 layers
    if "capped" in only:
        imgs.push("single", [int(256 * MiB * scale)], seed=300)  # 256 MiB in 1 layer
    return imgs


def xfs_export(runner: Runner, imgs: Images, work: Path, runs: int) -> Row:
    from tests.support.tools import MissingTool
    from tests.support.xfs import XfsUnavailable, reflink_xfs

    try:
        with reflink_xfs(work, size="4G") as mountpoint:
            return cases.export(runner, imgs, mountpoint, runs, "on XFS reflink", reflinks=True)
    except (XfsUnavailable, MissingTool) as exc:
        return Row(f"export {imgs.labels['big']} on XFS reflink", note=f"NOT MEASURED: {exc}", ok=False)


def table(rows: list[Row]) -> str:
    header = (
        "case",
        "cas",
        "skopeo",
        "ratio",
        "floor",
        "cas/floor",
        "baseline",
        "cas/baseline",
        "cpu/baseline",
        "peak RSS",
        "target",
        "",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.case,
                _time(r.cas),
                _time(r.skopeo),
                _ratio(r.cas, r.skopeo),
                f"{_time(r.floor)} {r.floor_name}".strip() if r.floor else "",
                _ratio(r.cas, r.floor),
                _time(r.baseline),
                _ratio(r.cas, r.baseline),
                f"{r.cpu_vs_baseline:.2f}x" if r.cpu_vs_baseline else "",
                f"{r.rss_mib:.0f} MiB" if r.rss_mib else "",
                r.target,
                ("ok" if r.ok else "MISSED") if r.ok is not None else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.case}: {r.note}" for r in rows if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def _ratio(value: float | None, against: float | None) -> str:
    return f"{value / against:.2f}x" if value and against else ""


def _time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
