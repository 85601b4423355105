"""What each command imports: work a command does not need stays off its path.

Checked from the interpreter's own import log (``python -X importtime``), which is written
as modules load, so it is complete even though the CLI ends with ``os._exit``. Not timed:
the figures live in benchmarks/ (``cas --version`` row).
"""

from __future__ import annotations

import re


def _imported(cas, *args: str) -> set[str]:
    proc = cas(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", proc.stderr, re.MULTILINE))


def test_version_imports_neither_typer_nor_httpx_nor_diskcache(cas):
    modules = _imported(cas, "--version")
    assert "cas" in modules  # the log was read
    assert not {"typer", "click", "httpx", "diskcache", "rich"} & modules


def test_offline_commands_never_import_httpx(cas, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "base")
    cas("pull", "-q", ref)
    assert "httpx" in _imported(cas, "pull", "-q", ref)  # the check can see httpx when it is there
    for args in (("images",), ("export", "-q", ref, "-o", str(tmp_path / "x.tar")), ("du",)):
        modules = _imported(cas, *args)
        assert "typer" in modules
        assert "httpx" not in modules, args


def test_typer_is_pinned_below_0_29_because_0_29_imports_pydantic_on_every_start(cas):
    """Why pyproject.toml keeps ``typer<0.29``: typer 0.29 requires pydantic and imports it to build an
    adapter per option on every start (an app of two commands took ~0.9 s longer here). The day a typer
    without that is out, this test passes with it and the pin can move."""
    import typer

    assert tuple(int(part) for part in typer.__version__.split(".")[:2]) < (0, 29)
    assert not {"pydantic", "pydantic_core"} & _imported(cas, "images")
