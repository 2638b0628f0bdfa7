"""The one rule for a script's entry point, shared by the repository (which checks a script when it is stored)
and the worker (which compiles it): a script holds one top-level function, possibly with helpers beside it; with
several, the one named like the script wins, else the first one defined (helpers usually follow the entry point
in OML examples; see docs/compatibility.md). Standard library only: the server imports it too."""

from __future__ import annotations

import ast


class ScriptSourceError(ValueError):
    """The source does not compile, or defines no function to call."""


def parse_script(name: str, source: str) -> tuple[ast.Module, str]:
    """The script's syntax tree and the name of the function it runs; ScriptSourceError says what is wrong."""
    if not isinstance(source, str) or not source.strip():
        raise ScriptSourceError("the script is empty")
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as e:
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        text = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise ScriptSourceError(f"SyntaxError: {e.msg} ({where}){text}") from None
    except (ValueError, RecursionError) as e:  # e.g. NUL bytes, absurd nesting
        raise ScriptSourceError(str(e)) from None
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    if not functions:
        raise ScriptSourceError("the script must define a function (def ...)")
    return tree, name if name in functions else functions[0]
