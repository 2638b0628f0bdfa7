"""`oml.ds`: datastores of pickled Python objects (save, load, dir, describe, delete)."""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
import zlib
from typing import Any
from urllib.parse import quote

import cloudpickle
import orjson
import pandas as pd
from cachetools import LRUCache

from oml import _connection
from oml._connection import PYQD
from oml.errors import ServerError
from oml.frame import DataFrame as TableProxy

#: Marks objects saved with compression=True.
COMPRESSED_MAGIC = b"PYQDZ1"
#: Bytes of pickled objects kept in this process, keyed by digest, so repeated loads skip the transfer.
CACHE_BYTES = 256 * 1024 * 1024

DIR_COLUMNS = {
    "user": ["datastore_name", "object_count", "size", "date", "description"],
    "grantable": ["datastore_name", "object_count", "size", "date", "description"],
    "private": ["datastore_name", "object_count", "size", "date", "description"],
    "all": ["owner", "datastore_name", "object_count", "size", "date", "description"],
    "granted": ["owner", "datastore_name", "object_count", "size", "date", "description"],
    "grant": ["datastore_name", "grantee"],
}
#: Times a load starts over when a concurrent save replaced an object under it.
LOAD_ATTEMPTS = 5
DESCRIBE_COLUMNS = ["object_name", "class", "size", "length", "row_count", "col_count"]


#: Object bytes by content digest, least recently used dropped first past CACHE_BYTES (a dict of bytes, so
#: loading the same model again in a worker costs no request).
_cache: LRUCache[str, bytes] = LRUCache(CACHE_BYTES, getsizeof=len)
_cache_lock = threading.Lock()


def describe_object(obj: Any) -> dict[str, Any]:
    """What `describe` reports of an object: class, length, row_count, col_count (OML's rules)."""
    name = type(obj).__name__
    module = type(obj).__module__
    if module == "oml" or module.startswith("oml."):
        name = f"oml.{name}"
    if isinstance(obj, pd.DataFrame):
        return {"class": name, "length": len(obj), "row_count": obj.shape[0], "col_count": obj.shape[1]}
    if isinstance(obj, TableProxy):
        rows, cols = obj.shape
        return {"class": name, "length": rows, "row_count": rows, "col_count": cols}
    # Only lists and dicts count their items (ALL_PYQ_DATASTORE_CONTENTS); tuples, arrays and the rest are 1.
    if isinstance(obj, list | dict):
        return {"class": name, "length": len(obj), "row_count": 1, "col_count": len(obj)}
    return {"class": name, "length": 1, "row_count": 1, "col_count": 1}


def save(
    objs: dict[str, Any],
    name: str,
    description: str = " ",
    grantable: bool | None = None,
    overwrite: bool = False,
    append: bool = False,
    compression: bool = False,
) -> None:
    """Save the objects of `objs` (name → object) to datastore `name`, all or nothing."""
    if not isinstance(objs, dict) or not objs:
        raise ValueError("objs must be a non-empty dict of name → object")
    if overwrite and append:
        raise ValueError("overwrite and append are mutually exclusive")
    files, meta = [], {}
    for key, obj in objs.items():
        data = cloudpickle.dumps(obj)
        if compression:
            data = COMPRESSED_MAGIC + zlib.compress(data)
        files.append((key, (key, data, "application/octet-stream")))
        meta[key] = describe_object(obj)
    body = {
        "description": description,
        "grantable": grantable,
        "overwrite": overwrite,
        "append": append,
        "objects": meta,
    }
    conn = _connection.current()
    conn.json(
        "POST", f"{PYQD}/datastores/{quote(name, safe='')}", data={"meta": orjson.dumps(body).decode()}, files=files
    )
    if conn.metadata_cache is not None:
        conn.metadata_cache.clear()
    from oml.frame import _keep_temporary

    _keep_temporary(objs.values())  # a saved proxy keeps its pushed table alive, as Oracle's does


def _describe(name: str, owner: str | None) -> dict[str, Any]:
    if not name:
        raise ValueError("name must not be empty")
    conn = _connection.current()
    cache = conn.metadata_cache
    if cache is not None and (name, owner) in cache:
        return cache[(name, owner)]  # type: ignore[return-value]
    params = {"owner": owner} if owner else {}
    info = conn.json("GET", f"{PYQD}/datastores/{quote(name, safe='')}", params=params)
    if cache is not None:
        cache[(name, owner)] = info
    return info


def _object_bytes(name: str, owner: str | None, obj: dict[str, Any]) -> bytes:
    digest = obj["digest"]
    with _cache_lock:
        data = _cache.get(digest)
    if data is None:
        # Ask for exactly the described version: a save in between makes the server answer 409, and the
        # load starts over, so one load never mixes objects of two saves.
        params = {"digest": digest, **({"owner": owner} if owner else {})}
        path = f"{PYQD}/datastores/{quote(name, safe='')}/objects/{quote(obj['object_name'], safe='')}"
        data = _connection.current().request("GET", path, params=params).content
        if len(data) <= CACHE_BYTES:
            with _cache_lock:
                _cache[hashlib.sha256(data).hexdigest()] = data
    return data


def _forget_description(name: str, owner: str | None) -> None:
    cache = _connection.current().metadata_cache
    if cache is not None:
        cache.pop((name, owner), None)


def _unpickle(data: bytes) -> Any:
    if data.startswith(COMPRESSED_MAGIC):
        data = zlib.decompress(data[len(COMPRESSED_MAGIC) :])
    return cloudpickle.loads(data)


def load(
    name: str, objs: list[str] | None = None, owner: str | None = None, to_globals: bool = True
) -> list[str] | dict[str, Any]:
    """Load all (or the named) objects; into the caller's globals (returns their names) or as a dict."""
    for attempt in range(LOAD_ATTEMPTS):
        info = _describe(name, owner)
        available = {o["object_name"]: o for o in info["objects"]}
        wanted = list(available) if objs is None else list(objs)
        missing = [o for o in wanted if o not in available]
        if missing:
            raise ValueError(f"datastore {name} has no object(s) named {', '.join(missing)}")
        try:
            loaded = {o: _unpickle(_object_bytes(name, owner, available[o])) for o in wanted}
            break
        except ServerError as e:
            if e.status != 409 or attempt == LOAD_ATTEMPTS - 1:
                raise
            _forget_description(name, owner)
    if not to_globals:
        return loaded
    frame = inspect.currentframe()
    caller_globals = frame.f_back.f_globals if frame and frame.f_back else globals()
    caller_globals.update(loaded)
    return list(loaded)


def dir(name: str | None = None, regex_match: bool = False, dstype: str = "user") -> pd.DataFrame:  # noqa: A001
    """Datastores of one type (`user`, `all`, `grant`, `granted`, `grantable`, `private`) as a DataFrame."""
    if dstype not in DIR_COLUMNS:
        raise ValueError(f"dstype must be one of {', '.join(DIR_COLUMNS)}")
    items = _connection.current().json("GET", f"{PYQD}/datastores", params={"type": dstype})
    if name is not None:
        items = [
            i for i in items if (re.search(name, i["datastore_name"]) if regex_match else i["datastore_name"] == name)
        ]
    df = pd.DataFrame(items, columns=DIR_COLUMNS[dstype])
    if "date" in df:
        df["date"] = pd.to_datetime(df["date"], utc=True).dt.tz_localize(None)
    return df.sort_values([c for c in ("owner", "datastore_name") if c in df], ignore_index=True)


def describe(name: str, owner: str | None = None) -> pd.DataFrame:
    """One row per object: object_name, class, size, length, row_count, col_count."""
    return pd.DataFrame(_describe(name, owner)["objects"], columns=DESCRIBE_COLUMNS)


def delete(name: str | list[str], objs: list[str] | None = None, regex_match: bool = False) -> list[str]:
    """Delete datastores (name, list of names, or regex with `regex_match`) or objects of one; returns the names
    deleted."""
    conn = _connection.current()
    if regex_match:
        if not isinstance(name, str):
            raise ValueError("with regex_match=True, name must be a pattern string")
        names = [
            i["datastore_name"]
            for i in conn.json("GET", f"{PYQD}/datastores", params={"type": "user"})
            if re.search(name, i["datastore_name"])
        ]
    else:
        names = [name] if isinstance(name, str) else list(name)
    if objs is not None and len(names) != 1:
        raise ValueError("objs can only be given for a single datastore")
    if objs is not None and not objs:
        return []
    deleted: list[str] = []
    for n in names:
        params = {"objects": list(objs)} if objs is not None else {}
        deleted.extend(conn.json("DELETE", f"{PYQD}/datastores/{quote(n, safe='')}", params=params))
    if conn.metadata_cache is not None:
        conn.metadata_cache.clear()
    return deleted
