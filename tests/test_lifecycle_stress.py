"""Many cas processes on one store at once: pulls, exports, rm, prunes and verifies in rounds.

Each command is its own process (``python -m cli``); threads here only start them. What must
hold: pulls never fail; an export either succeeds or says its image is not cached (an `rm`
won the race), never that blobs are missing; every export that succeeded loads on a clean
daemon and runs; a verify running in the middle never sees a corrupt or missing blob; and
at the end `cas verify --deep` is clean.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

NAMES = ("base", "app", "dockermedia", "ocidata", "multi")
HELLO = {
    "base": "hello from base\n",
    "app": "hello from app\n",
    "dockermedia": "hello from dockermedia\n",
    "ocidata": "hello from ocidata\n",
    "multi": "linux/amd64\n",
}
ROUNDS = 4


def test_concurrent_pulls_exports_rm_prune_keep_the_store_consistent(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    refs = {name: test_images.ref(registry, name) for name in NAMES}
    failures: list[str] = []
    exported: list[tuple[str, Path]] = []
    counts = {"pull": 0, "export": 0, "export-raced-rm": 0, "rm": 0, "prune": 0, "verify": 0}
    freed_blobs: list[int] = []
    lock = threading.Lock()

    def note(kind: str) -> None:
        with lock:
            counts[kind] += 1

    def fail(what: str, proc) -> None:
        with lock:
            failures.append(f"{what} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")

    def puller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(ROUNDS):
            wanted = rng.sample(NAMES, 2)
            proc = cas("pull", "-q", *(refs[n] for n in wanted), check=False, timeout=120)
            if proc.returncode != 0:
                fail(f"pull {wanted}", proc)
            note("pull")

    def exporter(seed: int) -> None:
        rng = random.Random(seed)
        for round_ in range(ROUNDS):
            name = rng.choice(NAMES)
            out = tmp_path / f"export-{seed}-{round_}-{name}.tar"
            proc = cas("export", "--pull", refs[name], "-o", out, check=False, timeout=120)
            if proc.returncode == 0:
                with lock:
                    exported.append((name, out))
                note("export")
            elif "not in the cache" in proc.stderr and not out.exists():
                note("export-raced-rm")
            else:
                fail(f"export {name}", proc)

    def collector(seed: int) -> None:
        rng = random.Random(seed)
        policies = [[], ["--keep-storage", "400KB"], [], ["--all"]]
        for round_ in range(ROUNDS):
            time.sleep(rng.uniform(0.1, 0.6))
            listed = cas("images", "--json", check=False)
            if listed.returncode != 0:
                fail("images", listed)
                continue
            cached = [row["ref"] for row in json.loads(listed.stdout)["images"]]
            if cached:
                victim = rng.choice(cached)
                proc = cas("rm", victim, check=False)
                if proc.returncode not in (0,) and "not in the cache" not in proc.stderr:
                    fail(f"rm {victim}", proc)
                note("rm")
            proc = cas(
                "prune", "--json", "--lock-timeout", "120", *policies[round_ % len(policies)], check=False, timeout=150
            )
            if proc.returncode != 0:
                fail("prune", proc)
            else:
                with lock:
                    freed_blobs.append(json.loads(proc.stdout)["freed_blobs"])
            note("prune")

    def checker(seed: int) -> None:
        for _ in range(ROUNDS):
            proc = cas("verify", "--json", "--lock-timeout", "120", check=False, timeout=150)
            if proc.returncode not in (0, 1) or not proc.stdout.lstrip().startswith("{"):
                fail("verify (during)", proc)
            else:
                kinds = {f["kind"] for f in json.loads(proc.stdout)["findings"]}
                # a download starting between mkdir and flock can look stale for an instant; nothing else may show
                if kinds - {"stale-ingest"}:
                    fail(f"verify (during) found {sorted(kinds)}", proc)
            note("verify")

    def guarded(body, seed: int) -> None:
        try:
            body(seed)
        except Exception as exc:  # e.g. `cas images` failing: a failure of the test, not a thread warning
            with lock:
                failures.append(f"{body.__name__} raised {exc!r}\n{exc}")

    started = time.monotonic()
    bodies = [puller, puller, exporter, exporter, collector, checker]
    workers = [threading.Thread(target=guarded, args=(body, seed)) for seed, body in enumerate(bodies)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert not any(w.is_alive() for w in workers), "a worker hung"
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures)
    assert counts["pull"] == 2 * ROUNDS and counts["prune"] == ROUNDS
    assert counts["export"] >= 1, counts
    assert sum(freed_blobs) > 0, "no prune swept anything: the test did not exercise the sweep"

    final = cas("verify", "--deep", "--json", check=False)
    assert final.returncode == 0, final.stdout
    assert json.loads(final.stdout)["ok"]
    assert json.loads(cas("prune", "--dry-run", "--json").stdout)["freed_stale_downloads"] == 0

    for name, archive in exported:
        clean_dockerd.wipe()
        loaded = clean_dockerd.load(archive)
        assert f"Loaded image: {refs[name]}" in loaded.stdout, loaded.stdout + loaded.stderr
        assert clean_dockerd.run(refs[name]).stdout == HELLO[name]
    print(f"stress: {counts}, blobs freed per prune {freed_blobs}, in {elapsed:.1f}s; {len(exported)} archives loaded")
