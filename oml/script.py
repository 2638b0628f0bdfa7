"""`oml.script`: the script repository (create, load, drop, dir), with Oracle's names and arguments."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import types
from collections.abc import Callable as _Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from oml import _connection
from oml._connection import PY_SCRIPTS, PYQD
from oml._source import parse_script
from oml.errors import NotFoundError

#: Repository script names (the server's rule): a plain name, never source code.
SCRIPT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
#: Columns of `dir()` per listing type, as OML4Py shows them.
DIR_COLUMNS = {
    "user": ["name", "script", "description", "date"],
    "all": ["owner", "name", "script", "description", "date"],
    "global": ["owner", "name", "script", "description", "date"],
    "granted": ["owner", "name", "script", "description", "date"],
    "grant": ["name", "grantee"],
}


class Source(str):
    """A script's source text; `.read()` also returns it (OML's `get_source().read()`)."""

    def read(self) -> str:
        return str(self)


class Callable:
    """A repository script (`oml.script.load`): callable locally, and usable as `func` of the apply functions."""

    def __init__(self, name: str, owner: str, source: str, description: str | None = None) -> None:
        self.name, self.owner, self._source, self.description = name, owner, source, description
        self._func: _Callable[..., Any] | None = None

    def get_source(self) -> Source:
        return Source(self._source)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._func is None:
            self._func = compile_function(self.name, self._source)
        return self._func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<oml.script.Callable {self.owner}.{self.name}>"


def compile_function(name: str, source: str) -> _Callable[..., Any]:
    """Run a script's source in a fresh namespace and return its function (`oml._source.parse_script` says which;
    the repository checks scripts by the same rule). Tracebacks show the script's name as the file name, with
    its lines."""
    import linecache

    tree, entry = parse_script(name, source)
    linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)
    namespace: dict[str, Any] = {"__name__": f"oml_script_{name}"}
    exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - running the user's own code is the point
    return namespace[entry]


def source_of(func: Any) -> str:
    """Source text for `func`: a string holding a def, a Python function, or a loaded Callable."""
    if isinstance(func, str):
        return func
    if isinstance(func, Callable):
        return func.get_source()
    if isinstance(func, types.FunctionType):
        try:
            return textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError) as e:
            raise ValueError(
                f"cannot read the source of {func.__name__} (defined interactively?); pass the source as a string"
            ) from e
    raise TypeError("func must be a function, a string holding a function definition, or an oml.script.Callable")


def create(
    name: str, func: Any, is_global: bool = False, overwrite: bool = False, description: str | None = None
) -> None:
    """Store `func` in the script repository under `name`."""
    _connection.current().json(
        "POST",
        f"{PYQD}/scripts",
        json={
            "name": name,
            "script": source_of(func),
            "isGlobal": bool(is_global),
            "overwrite": bool(overwrite),
            "description": description,
        },
    )


def load(name: str, owner: str | None = None) -> Callable:
    """A script by name: your own first, then a global one; or `owner`'s if granted to you."""
    params = {"owner": owner} if owner else {}
    item = _connection.current().json("GET", f"{PYQD}/scripts/{quote(name, safe='')}", params=params)
    return Callable(item["name"], item["owner"], item["script"], item.get("description"))


def drop(name: str, is_global: bool = False, silent: bool = False) -> None:
    """Remove a script; a missing one raises unless `silent`."""
    try:
        _connection.current().json(
            "DELETE", f"{PYQD}/scripts/{quote(name, safe='')}", params={"global": "true" if is_global else "false"}
        )
    except NotFoundError:
        if not silent:
            raise


def dir(name: str | list[str] | None = None, regex_match: bool = False, sctype: str = "user") -> pd.DataFrame:  # noqa: A001
    """Scripts of one type (`user`, `all`, `global`, `grant`, `granted`) as a DataFrame; `name` keeps those with
    that name (or any of a list of names), or matching the regular expression(s) with `regex_match=True`."""
    if sctype not in DIR_COLUMNS:
        raise ValueError(f"sctype must be one of {', '.join(DIR_COLUMNS)}")
    items = _connection.current().json("GET", f"{PY_SCRIPTS}/v2/scripts/{sctype}")
    names = [name] if isinstance(name, str) else list(name or [])
    if not all(isinstance(n, str) for n in names):
        raise TypeError("name must be a str, a list of str, or None")
    if names:
        if regex_match:
            items = [i for i in items if any(re.search(n, i["name"]) for n in names)]
        else:
            items = [i for i in items if i["name"] in names]
    df = pd.DataFrame(items, columns=DIR_COLUMNS[sctype])
    if "date" in df:
        df["date"] = pd.to_datetime(df["date"], utc=True).dt.tz_localize(None)
    return df


# -- files of scripts: oml.export_script / oml.import_script -----------------------------------------------
#: The line that opens each script in an exported .py file: the marker, then its name and description as JSON.
PY_MARKER = "# oml-script: "


def export_script(
    file_name: str,
    name: str | list[str] | None = None,
    regex_match: bool = False,
    sctype: str = "user",
    overwrite: bool = False,
) -> None:
    """Write scripts (as `dir` selects them) to a `.json` file (a list of {name, description, script, owner}) or a
    `.py` file (each script's source after a `# oml-script: {"name": ..., "description": ...}` line)."""
    kind = _file_kind(file_name)
    path = Path(file_name)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{file_name} exists; pass overwrite=True to replace it")
    listing = dir(name, regex_match, sctype)
    scripts = [
        {
            "name": row["name"],
            "description": row.get("description") if isinstance(row.get("description"), str) else None,
            "script": row["script"],
            **({"owner": row["owner"]} if "owner" in row else {}),
        }
        for row in listing.to_dict("records")
        if isinstance(row.get("script"), str)
    ]
    if kind == "json":
        text = json.dumps(scripts, indent=2, ensure_ascii=False) + "\n"
    else:
        parts = []
        for s in scripts:
            header = json.dumps({"name": s["name"], "description": s["description"]}, ensure_ascii=False)
            parts.append(f"{PY_MARKER}{header}\n{s['script'].rstrip()}\n")
        text = "\n\n".join(parts)
    path.write_text(text, encoding="utf-8")


def import_script(file_name: str, is_global: bool = False, overwrite: bool = False) -> None:
    """Store the scripts of a `.json` or `.py` file written by `export_script`. A `.py` file without
    `# oml-script:` lines stores each top-level function under its own name (with the file's imports)."""
    kind = _file_kind(file_name)
    text = Path(file_name).read_text(encoding="utf-8")
    scripts = _from_json(text, file_name) if kind == "json" else _from_py(text, file_name)
    for s in scripts:
        create(s["name"], s["script"], is_global=is_global, overwrite=overwrite, description=s.get("description"))


def _file_kind(file_name: str) -> str:
    if not isinstance(file_name, str) or not file_name.endswith((".json", ".py")):
        raise ValueError("file_name must end with .json or .py")
    return "json" if file_name.endswith(".json") else "py"


def _from_json(text: str, file_name: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("script"), str) for s in data
    ):
        raise ValueError(f"{file_name} must hold a list of {{name, script, description}} objects")
    return data


def _from_py(text: str, file_name: str) -> list[dict[str, Any]]:
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(PY_MARKER)]
    if not starts:
        import ast

        tree = ast.parse(text, filename=file_name)
        imports = "".join(
            (ast.get_source_segment(text, node) or "") + "\n"
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
        )
        return [
            {"name": node.name, "script": imports + (ast.get_source_segment(text, node, padded=True) or "") + "\n"}
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
        ]
    scripts = []
    for n, start in enumerate(starts):
        meta = json.loads(lines[start][len(PY_MARKER) :])
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        scripts.append({**meta, "script": "".join(lines[start + 1 : end]).strip("\n") + "\n"})
    return scripts
