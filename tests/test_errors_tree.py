"""The drawing of the error tree in cas.errors' docstring names every CasError class under its real parent."""

from __future__ import annotations

import inspect

import cas.errors


def _drawn() -> dict[str, str]:
    """class -> parent, read from the tree's indentation (4 columns per level)."""
    parents: dict[str, str] = {}
    path = ["CasError"]
    for line in cas.errors.__doc__.splitlines():
        if "── " not in line:
            continue
        column = line.index("── ") - 1
        depth = (column - 4) // 4 + 1
        name = line[column + 4 :].split()[0]
        del path[depth:]
        parents[name] = path[-1]
        path.append(name)
    return parents


def test_the_docstring_draws_every_error_class_under_its_parent():
    actual = {
        name: cls.__bases__[0].__name__
        for name, cls in vars(cas.errors).items()
        if inspect.isclass(cls) and issubclass(cls, cas.errors.CasError) and cls is not cas.errors.CasError
    }
    assert _drawn() == actual
