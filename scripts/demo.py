"""The demo behind `bash scripts/demo`: a local registry, two pulls, one export, one check.

It uses the test suite's registry and image builders (tests/support) so it needs nothing
from the internet. The archive is left in ./demo-app.tar (or --out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.registry import Registry  # noqa: E402
from support.standard import standard_images  # noqa: E402
from support.tools import require  # noqa: E402

CAS = str(ROOT / ".venv" / "bin" / "cas")


def step(*args: str, env: dict[str, str]) -> None:
    print(f"$ cas {' '.join(args)}", flush=True)
    subprocess.run([CAS, *args], env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-app.tar"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cas-demo-"))
    env = dict(os.environ, CAS_HOME=str(work / "store"))
    with Registry(work / "registry") as registry:
        pushed = standard_images().push(registry)
        base, app = pushed["base"].ref, pushed["app"].ref
        print(f"local registry on {registry.host} with {base} and {app} (app shares base's layers)\n")
        step("pull", base, env=env)
        step("pull", app, env=env)
        step("pull", app, env=env)
        step("export", app, "-o", str(args.out), env=env)
    check = work / "check"
    try:
        subprocess.run(
            [
                require("skopeo", "skopeo"),
                "--insecure-policy",
                "copy",
                "-q",
                f"docker-archive:{args.out}",
                f"oci:{check}",
            ],
            check=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{args.out}: {args.out.stat().st_size} bytes; skopeo read every layer of it back. "
        f"Load it with `docker load -i {args.out}`."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
