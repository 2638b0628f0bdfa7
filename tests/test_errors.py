"""Every error class answers with a status of its own choosing, and each errors.py draws its real tree."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from server import errors

#: The modules that define the errors the server answers.
ERROR_MODULES = [
    "server.auth.errors",
    "repository.errors",
    "datastore.errors",
    "tables.errors",
    "engines.errors",
]


def error_classes(module_name: str) -> list[type[Exception]]:
    module = importlib.import_module(module_name)
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == module_name
    ]


@pytest.mark.parametrize("module_name", ERROR_MODULES)
def test_every_error_class_resolves_to_a_status(module_name):
    unresolved = [cls.__name__ for cls in error_classes(module_name) if errors.lookup(cls.__new__(cls)) is None]
    assert unresolved == []


def test_a_new_error_answers_as_its_base_does():
    from tables.errors import QueryRejected

    class Newcomer(QueryRejected):
        pass

    assert errors.lookup(Newcomer("x")) == errors.INVALID_QUERY


#: A line of a drawn tree: a root class alone on its line, or a branch (its name after the tree's drawing).
TREE_LINE = re.compile(r"^(?:([A-Z]\w+)$|([│├└─\s]*[├└]── )([A-Z]\w+))")


def drawn_tree(module_name: str) -> list[tuple[int, str]]:
    """(depth, class name) of each line of the module docstring's tree."""
    module = importlib.import_module(module_name)
    out = []
    for line in (module.__doc__ or "").splitlines():
        m = TREE_LINE.match(line)
        if m:
            out.append((0, m.group(1)) if m.group(1) else (len(m.group(2)), m.group(3)))
    return out


@pytest.mark.parametrize("module_name", ERROR_MODULES)
def test_the_docstring_tree_names_every_class_and_only_them(module_name):
    drawn = {name for _, name in drawn_tree(module_name)}
    defined = {cls.__name__ for cls in error_classes(module_name)}
    assert (sorted(defined - drawn), sorted(drawn - defined)) == ([], [])


def test_the_tree_draws_each_class_under_its_base():
    """The indentation of the tree says which class each one extends."""
    for module_name in ERROR_MODULES:
        classes = {cls.__name__: cls for cls in error_classes(module_name)}
        stack: list[tuple[int, str]] = []
        for depth, name in drawn_tree(module_name):
            while stack and stack[-1][0] >= depth:
                stack.pop()
            if stack:
                parent = classes[stack[-1][1]]
                assert parent in classes[name].__bases__, (module_name, name, parent.__name__)
            else:
                assert classes[name].__bases__ == (Exception,), (module_name, name)
            stack.append((depth, name))
