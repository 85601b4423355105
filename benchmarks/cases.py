"""The benchmark cases: cas and skopeo doing the same job on the same local servers, in turn.

Each case returns ``Row``s; ``run.py`` prints them as one table. Every timed command is a fresh
process wrapped in GNU time, cas and skopeo alike (so both pay the same ~1 ms), and cas's
peak RSS is the largest that GNU time reported over its runs.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import CAS, PYTHON, ROOT

from tests.support import images
from tests.support.registry import Registry
from tests.support.tools import require

MiB = 1 << 20
Env = dict[str, str] | None
Baseline = tuple[str, Env] | None  # another checkout's cas, and the environment it runs in
Times = list[float]
CAP = 20_000_000  # bytes/s per connection for the capped-link cases


@dataclass
class Row:
    case: str
    cas: float | None = None  # median seconds
    skopeo: float | None = None
    floor: float | None = None
    floor_name: str = ""
    target: str = ""  # e.g. "<= 0.3x skopeo"
    ok: bool | None = None
    rss_mib: float | None = None
    note: str = ""
    baseline: float | None = None  # median seconds of the --baseline checkout's cas, timed in turn with this one
    cpu_vs_baseline: float | None = None  # median CPU seconds (user + sys) of this cas over the baseline's


@dataclass
class Images:
    """The images of the issue's list, pushed once: name -> (reference, blob digests, bytes)."""

    registry: Registry
    refs: dict[str, str] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def push(self, name: str, layer_sizes: list[int], seed: int) -> None:
        image = images.Image([_random_layer(size, seed + 1000 * i) for i, size in enumerate(layer_sizes)])
        images.push(self.registry, f"bench/{name}", "1", image)
        self.refs[name] = f"{self.registry.host}/bench/{name}:1"
        self.digests[name] = image.digests
        self.sizes[name] = image.size
        self.labels[name] = (
            f"{sum(layer_sizes) / MiB:.0f} MiB/{len(layer_sizes)} layer{'s' if len(layer_sizes) > 1 else ''}"
        )


def _random_layer(size: int, seed: int) -> images.Layer:
    """A layer of ``size`` incompressible bytes, in files of at most 64 MiB (randbytes' limit is 256 MiB)."""
    if size <= 64 * MiB:
        return images.random_layer(size, seed=seed)
    files = {
        f"random{i}.bin": images.random_bytes(min(64 * MiB, size - at), seed + i)
        for i, at in enumerate(range(0, size, 64 * MiB))
    }
    return images.layer(files, gzip_level=1, comment=f"random {size} bytes, seed {seed}")


class Runner:
    """Times fresh processes; keeps the peak RSS and the CPU seconds of each command kind."""

    def __init__(self, scratch: Path) -> None:
        self.time = require("time", "time", prefer=["/usr/bin/time"])
        self.skopeo = require("skopeo", "skopeo")
        self.scratch = scratch
        self.rss: dict[str, int] = {}  # kind -> KiB
        self.cpu: dict[str, list[float]] = {}  # kind -> user + sys seconds of each run

    def timed(self, kind: str, cmd: list[str], env: dict[str, str] | None = None, stdout=subprocess.DEVNULL) -> float:
        report = self.scratch / "rss.txt"
        started = time.perf_counter()
        proc = subprocess.run(
            [self.time, "-f", "%M %U %S", "-o", str(report), *cmd], env=env, stdout=stdout, stderr=subprocess.PIPE
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
        rss, user, system = report.read_text().split()[-3:]
        self.rss[kind] = max(self.rss.get(kind, 0), int(rss))
        self.cpu.setdefault(kind, []).append(float(user) + float(system))
        return elapsed

    def rss_mib(self, kind: str) -> float:
        return self.rss.get(kind, 0) / 1024

    def in_turn(
        self, i: int, kind: str, args: list[str], env: Env, baseline: Baseline, mine: Times, theirs: Times
    ) -> None:
        """``cas ARGS`` and, given a ``baseline`` (its cas, its environment), that cas's ``ARGS``, one after
        the other: the baseline first every other run, so that neither always follows the same command."""
        turns = [(mine, kind, CAS, env)]
        if baseline:
            turns.append((theirs, f"baseline {kind}", *baseline))
        for into, what, program, where in turns if i % 2 == 0 else turns[::-1]:
            into.append(self.timed(what, [program, *args], where))

    def against_baseline(self, row: Row, seconds: list[float], kind: str) -> None:
        """Give ``row`` the baseline's median and the CPU ratio of ``kind`` to ``baseline KIND``."""
        if seconds:
            row.baseline = median(seconds)
            theirs = median(self.cpu[f"baseline {kind}"])
            row.cpu_vs_baseline = median(self.cpu[kind]) / theirs if theirs else None

    def skopeo_pull(self, ref: str, layout: Path) -> list[str]:
        return [self.skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:bench"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_row(case: str, cas: list[float], skopeo: list[float], limit: float, rss: float, **extra) -> Row:
    row = Row(case, median(cas), median(skopeo), target=f"<= {limit}x skopeo", rss_mib=rss, **extra)
    row.ok = row.cas / row.skopeo <= limit
    return row


def pulls(runner: Runner, imgs: Images, work: Path, runs: int, baseline: str | None = None) -> list[Row]:
    """Cold and warm pulls of the 64 MiB and the 640 MiB image, straight from the registry; with a
    ``baseline`` cas, its warm pull and `cas images` in turn with this one's, each on a store of its own."""
    rows = []
    for name, cold_limit in (("small", 1.2), ("big", 0.9)):
        ref, kind = imgs.refs[name], f"pull {name}"
        home, layout = work / "home-pull", work / "oci-pull"
        env = dict(os.environ, CAS_HOME=str(home))
        base_env = dict(os.environ, CAS_HOME=str(work / "home-pull-baseline"))
        t: dict[str, list[float]] = {k: [] for k in ("cold", "skopeo cold", "warm", "skopeo warm", "images")}
        b: dict[str, list[float]] = {"warm": [], "images": []}
        theirs = (baseline, base_env) if baseline else None
        for i in range(runs):
            for path in (home, layout, work / "home-pull-baseline"):
                shutil.rmtree(path, ignore_errors=True)
            t["cold"].append(runner.timed(kind, [CAS, "pull", "-q", ref], env))
            t["skopeo cold"].append(runner.timed("skopeo", runner.skopeo_pull(ref, layout)))
            if baseline:
                runner.timed("baseline cold", [baseline, "pull", "-q", ref], base_env)
            runner.in_turn(i, kind + " warm", ["pull", "-q", ref], env, theirs, t["warm"], b["warm"])
            t["skopeo warm"].append(runner.timed("skopeo", runner.skopeo_pull(ref, layout)))
            runner.in_turn(i, f"images {name}", ["images"], env, theirs, t["images"], b["images"])
        label = imgs.labels[name]
        rows.append(ratio_row(f"cold pull {label}", t["cold"], t["skopeo cold"], cold_limit, runner.rss_mib(kind)))
        warm = ratio_row(f"warm pull by tag {label}", t["warm"], t["skopeo warm"], 4, runner.rss_mib(kind + " warm"))
        listed = Row(f"cas images (1 image, {label})", median(t["images"]), rss_mib=runner.rss_mib(f"images {name}"))
        runner.against_baseline(warm, b["warm"], kind + " warm")
        runner.against_baseline(listed, b["images"], f"images {name}")
        rows += [warm, listed]
        shutil.rmtree(layout, ignore_errors=True)
    shutil.rmtree(work / "home-pull", ignore_errors=True)
    shutil.rmtree(work / "home-pull-baseline", ignore_errors=True)
    return rows


def many_images(runner: Runner, work: Path, runs: int, baseline: str | None = None) -> Row:
    """`cas images` on bench_gc.py's store of 1,000 images (4,000 blobs). With a ``baseline`` cas, that
    checkout's own bench_gc.py builds the store, so each cas reads a copy in the layout its code writes
    (this one brings its copy up to date at an untimed first run), in turn."""
    built = work / "many-built"
    checkout = Path(baseline).parent.parent.parent if baseline else ROOT
    build = "import sys; from pathlib import Path; from bench_gc import build; build(Path(sys.argv[1]), 1000, 4000)"
    subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-c", build, str(built)],
        cwd=checkout / "benchmarks",
        check=True,
        stdout=subprocess.DEVNULL,
    )
    homes = {"cas": work / "many-cas", "baseline": work / "many-baseline"}
    for home in homes.values():
        shutil.copytree(built, home, symlinks=True)
    env = {kind: dict(os.environ, CAS_HOME=str(home)) for kind, home in homes.items()}
    runner.timed("images many, first", [CAS, "images"], env["cas"])  # an older layout is brought up to date
    t: dict[str, list[float]] = {"cas": [], "baseline": []}
    theirs = (baseline, env["baseline"]) if baseline else None
    for i in range(runs):
        runner.in_turn(i, "images many", ["images"], env["cas"], theirs, t["cas"], t["baseline"])
    for path in (built, *homes.values()):
        shutil.rmtree(path, ignore_errors=True)
    row = Row("cas images (1,000 images)", median(t["cas"]), rss_mib=runner.rss_mib("images many"))
    runner.against_baseline(row, t["baseline"], "images many")
    return row


def capped_pulls(runner: Runner, imgs: Images, work: Path, runs: int) -> list[Row]:
    """Cold pulls through a proxy that caps each connection at 20 MB/s (a CDN, a long fat link)."""
    from tests.support.proxy import FaultProxy

    rows = []
    with FaultProxy(imgs.registry) as proxy:
        proxy.throttle(CAP)
        for name, limit in (("single", 0.3), ("big", 0.8)):
            ref = imgs.refs[name].replace(imgs.registry.host, proxy.host)
            kind, home, layout = f"capped {name}", work / "home-capped", work / "oci-capped"
            env = dict(os.environ, CAS_HOME=str(home))
            cas, skopeo = [], []
            for _ in range(runs):
                shutil.rmtree(home, ignore_errors=True)
                shutil.rmtree(layout, ignore_errors=True)
                cas.append(runner.timed(kind, [CAS, "pull", "-q", ref], env))
                skopeo.append(runner.timed("skopeo", runner.skopeo_pull(ref, layout)))
            wire = imgs.sizes[name] / (8 * CAP)  # 8 connections at the cap: the default --connections
            rows.append(
                ratio_row(
                    f"pull {imgs.labels[name]}, 20 MB/s per conn",
                    cas,
                    skopeo,
                    limit,
                    runner.rss_mib(kind),
                    floor=wire,
                    floor_name="8 conns at cap",
                )
            )
    shutil.rmtree(work / "home-capped", ignore_errors=True)
    shutil.rmtree(work / "oci-capped", ignore_errors=True)
    return rows


def export(runner: Runner, imgs: Images, place: Path, runs: int, label: str, *, reflinks: bool) -> Row:
    """`cas export` of the 640 MiB image vs `skopeo copy oci: docker-archive:`, and cat + fsync of its blobs.

    Store, skopeo layout and outputs all live under ``place`` (ext4, or the loop-mounted XFS).
    """
    from tests.support.xfs import used_bytes

    name = "big"
    ref, home, layout, out = imgs.refs[name], place / "home", place / "oci", place / "out"
    place.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CAS_HOME=str(home))
    subprocess.run([CAS, "pull", "-q", ref], env=env, check=True)
    subprocess.run(runner.skopeo_pull(ref, layout), check=True, stdout=subprocess.DEVNULL)
    blobs = [str(home / "v1" / "blobs" / "sha256" / d.removeprefix("sha256:")) for d in imgs.digests[name]]
    cat, sync = require("cat", "coreutils"), require("sync", "coreutils")
    out.mkdir(exist_ok=True)
    kind = f"export {label}"
    cas, skopeo, floor, added = [], [], [], []
    for _ in range(runs):
        for target in out.iterdir():
            target.unlink()
        before = used_bytes(place) if not added else 0
        cas.append(runner.timed(kind, [CAS, "export", "-q", ref, "-o", str(out / "cas.tar")], env))
        if not added:  # the first run only: later ones follow deletions that XFS frees in the background
            added.append((used_bytes(place) - before) / (out / "cas.tar").stat().st_size)
        skopeo.append(
            runner.timed(
                "skopeo", [runner.skopeo, "copy", "-q", f"oci:{layout}:bench", f"docker-archive:{out / 's.tar'}:{ref}"]
            )
        )
        with open(out / "floor.tar", "wb") as fh:
            copy = runner.timed("cat", [cat, *blobs], stdout=fh)
        floor.append(copy + runner.timed("sync", [sync, str(out / "floor.tar")]))
    limit = 0.05 if reflinks else None
    row = Row(
        f"export {imgs.labels[name]} {label}",
        median(cas),
        median(skopeo),
        floor=median(floor),
        floor_name="cat+fsync",
        rss_mib=runner.rss_mib(kind),
        note=f"archive added {median(added) * 100:.1f}% of its size to used space",
    )
    if reflinks:
        row.target = "<= 0.05x skopeo, < 5% space"
        row.ok = row.cas / row.skopeo <= limit and median(added) < 0.05
    else:
        row.target = "<= 1.1x floor"
        row.ok = row.cas / row.floor <= 1.1
    for path in (home, layout, out):
        shutil.rmtree(path, ignore_errors=True)
    return row


def version(runner: Runner, runs: int, baseline: str | None = None) -> Row:
    cas, skopeo, floor, base = [], [], [], []
    for i in range(runs):
        runner.in_turn(i, "version", ["--version"], None, (baseline, None) if baseline else None, cas, base)
        skopeo.append(runner.timed("skopeo", [runner.skopeo, "--version"]))
        floor.append(runner.timed("python", [PYTHON, "-c", "pass"]))
    row = Row("cas --version", median(cas), median(skopeo), median(floor), "python -c pass", "<= 45 ms")
    row.rss_mib, row.ok = runner.rss_mib("version"), row.cas <= 0.045
    runner.against_baseline(row, base, "version")
    return row


def _bench_json(root: Path, script: str, *args: str) -> dict | Row:
    """The JSON figures another benchmark script prints last, or a failed row saying why."""
    proc = subprocess.run(
        [PYTHON, str(root / "benchmarks" / script), *args, "--json"], capture_output=True, text=True, check=False
    )
    out = "\n" + proc.stdout
    start = out.rfind("\n{")  # the last top-level object; printed even when it then exits 1 for a missed target
    if start < 0:
        return Row(script, note=f"FAILED: {(proc.stderr or proc.stdout).strip()[-300:]}", ok=False)
    return json.loads(out[start:])


def gc(root: Path) -> list[Row]:
    """benchmarks/bench_gc.py (10,000 blobs, 1,000 images) as rows: cas only, no peer does this."""
    report = _bench_json(root, "bench_gc.py")
    if isinstance(report, Row):
        return [report]
    rows = []
    for step in report["steps"]:
        row = Row(f"{step['name']} (10k blobs)", step["seconds"], rss_mib=step.get("peak_rss_mib"))
        if step["name"].startswith(("du", "prune")):
            row.target, row.ok = f"< {report['target_seconds']:.0f} s", step["seconds"] < report["target_seconds"]
        rows.append(row)
    return rows


def imports(root: Path, runs: int) -> list[Row]:
    """benchmarks/bench_import.py as rows: `cas import` vs skopeo, and the delta archive's size."""
    figures = _bench_json(root, "bench_import.py", "--runs", str(runs))
    if isinstance(figures, Row):
        return [figures]
    med, mib = figures["median_seconds"], figures["archive_bytes"] / MiB
    rows = [
        ratio_row(f"import {mib:.0f} MiB archive ({how})", [med[f"cas {how}"]], [med["skopeo"]], 0.6, None)
        for how in ("file", "stdin")
    ]
    over = figures["delta_vs_new_layer"] - 1
    rows.append(
        Row(
            "export --since (delta archive)",
            med["delta"],
            target="size <= new layer + 1%",
            ok=over <= 0.01,
            note=f"delta {figures['delta_bytes']:,} bytes for a {figures['new_layer_bytes']:,}-byte new layer",
        )
    )
    return rows


def pushes(root: Path, runs: int) -> list[Row]:
    """benchmarks/bench_push.py as rows: `cas push` vs `skopeo copy oci: docker://` (no target set)."""
    med = _bench_json(root, "bench_push.py", "--runs", str(runs))
    if isinstance(med, Row):
        return [med]
    return [
        Row(f"push 64 MiB/2 layers ({case})", med[f"cas {case}"], med[f"skopeo {case}"], target="(none set)")
        for case in ("cold", "warm")
    ]


def budget(root: Path, runs: int) -> list[Row]:
    """benchmarks/bench_budget.py as a row: a pull that evicts 1,000 small images vs the same pull without a budget."""
    figures = _bench_json(root, "bench_budget.py", "--runs", str(runs))
    if isinstance(figures, Row):
        return [figures]
    return [
        Row(
            f"pull evicting {figures['evicted_images']:,} images (--max-size)",
            figures["budget_seconds"],
            floor=figures["plain_seconds"],
            floor_name="no budget",
            target=f"< +{figures['target_seconds']} s",
            ok=figures["added_seconds"] < figures["target_seconds"],
            note=f"eviction adds {figures['added_seconds']:.3f} s ({figures['eviction_seconds']:.3f} s in the pull's "
            f"own measure) to free {figures['evicted_bytes'] / MiB:.1f} MiB",
        )
    ]


def mirrors(root: Path, runs: int) -> list[Row]:
    """benchmarks/bench_mirror.py as a row: later hosts through a warm pull-through mirror vs the first."""
    figures = _bench_json(root, "bench_mirror.py", "--rounds", str(runs))
    if isinstance(figures, Row):
        return [figures]
    return [
        Row(
            "pull via mirror, hosts 2.. vs host 1",
            figures["later_hosts_ms"] / 1000,
            floor=figures["host1_ms"] / 1000,
            floor_name="host 1",
            target="< 1.0x host 1",
            ok=figures["later_vs_first"] < 1.0,
            note=f"the upstream served {figures['upstream_copies']:.2f} copies of the image in all",
        )
    ]


SET_SIZE = 20


def image_set(runner: Runner, registry: Registry, work: Path, runs: int) -> Row:
    """A build machine's warm re-pull: `cas pull -f` of 20 cached images (one process, tags resolved
    in parallel, nothing downloaded) against 20 warm `skopeo copy` runs of the same images."""
    refs = []
    for n in range(SET_SIZE):
        image = images.Image([images.random_layer(256 * 1024, seed=700 + n), images.random_layer(64 * 1024, seed=800)])
        images.push(registry, f"bench/set{n}", "1", image)
        refs.append(f"{registry.host}/bench/set{n}:1")
    listing = work / "images.txt"
    listing.write_text("".join(f"{ref}\n" for ref in refs))
    home, layout = work / "home-set", work / "oci-set"
    env = dict(os.environ, CAS_HOME=str(home))
    subprocess.run([CAS, "pull", "-q", "-f", str(listing)], env=env, check=True)
    copies = [[*runner.skopeo_pull(ref, layout)[:-1], f"oci:{layout}:set{n}"] for n, ref in enumerate(refs)]
    for cmd in copies:
        subprocess.run(cmd, check=True)
    cas_times, skopeo_times = [], []
    for _ in range(runs):
        cas_times.append(runner.timed("pull -f", [CAS, "pull", "-q", "-f", str(listing)], env))
        skopeo_times.append(sum(runner.timed("skopeo", cmd) for cmd in copies))
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)
    case = f"warm pull -f of {SET_SIZE} cached images vs {SET_SIZE} skopeo copy runs"
    return ratio_row(case, cas_times, skopeo_times, 0.3, runner.rss_mib("pull -f"))
