"""The two set-up commands README.md promises keep working."""

import re
import subprocess
import sys
from pathlib import Path

from support.standard import standard_images

ROOT = Path(__file__).resolve().parent.parent


def test_readme_names_the_demo_and_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^bash scripts/demo\b", readme, re.M)
    assert re.search(r"^bash \.ci/run\b", readme, re.M)
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


def test_demo_pulls_incrementally_and_exports_a_checked_archive(tmp_path):
    out = tmp_path / "app.tar"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout + proc.stderr
    app, base = standard_images().app, standard_images().base
    own, shared = set(app.digests) - set(base.digests), set(app.digests) & set(base.digests)
    assert f"downloaded {len(own)} blob(s)" in lines and f"reused {len(shared)}," in lines  # only app's own blobs
    assert f"downloaded 0 blob(s), 0 B; reused {len(app.digests)}," in lines
    assert f"docker-archive: {len(app.digests)} blob(s)" in lines  # the export counts the same blobs as the pull
    assert out.stat().st_size > 1_000_000
