"""Plain `cas verify` while other processes pull and prune: a download another
process holds, is about to lock or is just removing is not stale, so no verify may report it.

Three loops run for at least 60 s, each command its own process: one pulls, one prunes
everything, one verifies. Every pull and prune must exit 0, and every verify must exit 0 with no
finding at all.
"""

from __future__ import annotations

import json
import threading
import time

DURATION = 60.0
NAMES = ("base", "app", "dockermedia", "ocidata", "multi")


def test_verify_running_beside_pull_and_prune_loops_never_reports_a_finding(cas, registry, test_images):
    refs = [test_images.ref(registry, name) for name in NAMES]
    deadline = time.monotonic() + DURATION
    failures: list[str] = []
    counts = {"pull": 0, "prune": 0, "verify": 0}
    lock = threading.Lock()

    def loop(kind: str, *args: str) -> None:
        while time.monotonic() < deadline:
            proc = cas(*args, check=False, timeout=120)
            with lock:
                counts[kind] += 1
                if kind == "verify" and proc.stdout.startswith("{"):
                    found = [f"{f['kind']}: {f['detail']}" for f in json.loads(proc.stdout)["findings"]]
                    if found or proc.returncode != 0:
                        failures.append(f"verify exited {proc.returncode}: {found} {proc.stderr[-400:]}")
                elif proc.returncode != 0:
                    failures.append(f"{kind} exited {proc.returncode}: {proc.stdout[-400:]}{proc.stderr[-400:]}")

    loops = [
        threading.Thread(target=loop, args=("pull", "pull", "-q", *refs)),
        threading.Thread(target=loop, args=("prune", "prune", "-q", "--all", "--lock-timeout", "120")),
        threading.Thread(target=loop, args=("verify", "verify", "--json", "--lock-timeout", "120")),
    ]
    started = time.monotonic()
    for t in loops:
        t.start()
    for t in loops:
        t.join(timeout=DURATION + 240)
    assert not any(t.is_alive() for t in loops), "a loop hung"
    assert time.monotonic() - started >= DURATION
    assert not failures, f"{len(failures)} failure(s) in {counts}:\n" + "\n".join(failures[:5])
    assert min(counts.values()) >= 3, counts  # each loop really ran beside the others
    print(f"concurrent loops for {time.monotonic() - started:.0f} s: {counts}")
