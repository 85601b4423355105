"""`python3 -m venv v && v/bin/pip install .` without the test packages gives a cas that pulls and exports.

pip reads no configuration of this machine and no package index: it installs from the wheelhouse
``bash scripts/install --test`` keeps in .venv/wheelhouse (cas's dependencies and its build backend),
so the test needs only loopback. The checkout's sources are copied first, so that the build leaves
nothing in the checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from support.tools import run

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_PACKAGES = ("pytest", "cryptography", "ruff")


def test_pip_install_dot_in_a_fresh_venv_gives_a_cas_that_pulls_and_exports(tmp_path, registry, test_images, skopeo):
    wheelhouse = REPO_ROOT / ".venv" / "wheelhouse"
    assert wheelhouse.is_dir(), f"no {wheelhouse}: run `bash scripts/install --test`"
    checkout = tmp_path / "checkout"
    for package in ("cas", "cli"):
        shutil.copytree(REPO_ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, checkout / name)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf of this machine: no index, no find-links but ours

    venv = tmp_path / "v"
    run([sys.executable, "-m", "venv", str(venv)], env=env)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse), "."]
    run(pip, env=env, cwd=checkout, timeout=600)
    python = str(venv / "bin" / "python")
    probe = "import importlib.util, json, cas; print(json.dumps([cas.__file__, *(importlib.util.find_spec(n) is not None for n in {names!r})]))"
    where, *found = json.loads(run([python, "-c", probe.format(names=TEST_PACKAGES)], env=env, cwd=tmp_path).stdout)
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout
    assert found == [False] * len(TEST_PACKAGES), dict(zip(TEST_PACKAGES, found, strict=True))
    assert importlib.util.find_spec("pytest") is not None  # while this interpreter has them

    cas = str(venv / "bin" / "cas")
    home, docker_config = tmp_path / "home", tmp_path / "docker-config"
    docker_config.mkdir()
    env |= {"CAS_HOME": str(home), "DOCKER_CONFIG": str(docker_config), "NO_PROXY": "127.0.0.1,localhost"}
    app = test_images.ref(registry, "app")
    run([cas, "pull", "-q", app], env=env, cwd=tmp_path)
    archive = tmp_path / "app.tar"
    run([cas, "export", app, "-o", str(archive)], env=env, cwd=tmp_path)
    layout = tmp_path / "from-archive"
    skopeo.copy(f"docker-archive:{archive}", f"oci:{layout}:app")
    (listed,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs" / "sha256" / listed["digest"][7:]).read_text())
    assert manifest["config"]["digest"] == test_images.app.config_blob.digest
    assert len(manifest["layers"]) == len(test_images.app.layers)
