"""Checking script source when it is stored: it must compile and define a function to call (the rule is
`oml._source.parse_script`'s, the one the worker compiles by)."""

from __future__ import annotations

from oml._source import ScriptSourceError, parse_script
from repository.errors import InvalidScript


def entry_function(name: str, source: str) -> str:
    """The name of the function a script runs, or InvalidScript saying what is wrong."""
    try:
        return parse_script(name, source)[1]
    except ScriptSourceError as e:
        raise InvalidScript(name, str(e)) from None
