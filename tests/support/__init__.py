"""Test infrastructure for cas: real servers and consumers, started once per session.

Why a package of its own: the registry, token server, fault proxy, image builder and the
consumers (skopeo, dockerd, podman) are each small and testable on their own
(``tests/test_support_*.py``), and ``tests/conftest.py`` only wires them into fixtures.
Nothing here imports ``cas``: the infrastructure is an independent oracle.

Import it as ``support`` (conftest puts tests/ on sys.path). ``tests.support`` works too and
gives the very same module objects (the alias below), so ``isinstance`` checks and the
memoized standard images never split into two copies.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_NAMES = ("support", "tests.support")


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``<other>.x`` to the already-canonical ``<canonical>.x`` module."""

    def __init__(self, canonical: str, other: str) -> None:
        self.canonical, self.other = canonical, other

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.other + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(self.canonical + spec.name[len(self.other) :])

    def exec_module(self, module) -> None:
        pass


if __name__ in _NAMES:
    _other = _NAMES[1 - _NAMES.index(__name__)]
    sys.modules.setdefault(_other, sys.modules[__name__])
    sys.meta_path.insert(0, _Alias(__name__, _other))
