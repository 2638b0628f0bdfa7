"""Checking script source: it must compile and define a function to call."""

from __future__ import annotations

import ast

from repository.errors import InvalidScript


def entry_function(name: str, source: str) -> str:
    """The name of the function a script runs, or InvalidScript saying what is wrong.

    A script holds one top-level function, possibly with helpers beside it. With several, the one
    named like the script wins, else the first one defined (helpers usually follow the entry point
    in OML examples; see docs/compatibility.md).
    """
    if not isinstance(source, str) or not source.strip():
        raise InvalidScript(name, "the script is empty")
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as e:
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        text = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise InvalidScript(name, f"SyntaxError: {e.msg} ({where}){text}") from None
    except (ValueError, RecursionError) as e:  # e.g. NUL bytes, absurd nesting
        raise InvalidScript(name, str(e)) from None
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    if not functions:
        raise InvalidScript(name, "the script must define a function (def ...)")
    return name if name in functions else functions[0]
