"""The two set-up commands README.md promises keep working."""

import re
import subprocess
import sys
from pathlib import Path

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
    assert "downloaded 3 blob(s)" in lines and "reused 3" in lines  # app after base: only app's own blobs
    assert "downloaded 0 blob(s)" in lines
    assert out.stat().st_size > 1_000_000
