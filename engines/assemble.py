"""Putting unit results together in OML's shapes (reference §3.4) as they arrive, in order, without re-parsing
them: JSON fragments are spliced into a sink that keeps small results in memory and spills large ones to a
temporary file, so the server's memory does not grow with the result."""

from __future__ import annotations

import base64
import os
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from engines.errors import OutputTooLarge, OutputTooLong, ResultNotSerializable
from engines.protocol import Kind, Result

#: Bytes read from a spilled body at a time when sending it.
READ_CHUNK = 1 << 20


@dataclass
class Body:
    """A finished result: in memory (`data`) or in a file (`path`, deleted once sent or discarded)."""

    data: bytes | None
    path: str | None
    size: int
    #: How many unit results went into it (set by the Assembler; None when not assembled from units).
    units: int | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        with open(self.path, "rb") as f:
            return f.read()

    def chunks(self) -> Iterator[bytes]:
        """The bytes, a piece at a time; a spilled file is removed afterwards."""
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                while piece := f.read(READ_CHUNK):
                    yield piece
        finally:
            self.discard()

    def discard(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class Sink:
    """Bytes appended in order: in memory up to `spill_bytes`, then in a temporary file in `spill_dir`."""

    def __init__(self, spill_dir: str | None, spill_bytes: int) -> None:
        self._dir, self._limit = spill_dir, spill_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._file is None and self._size > self._limit:
            if self._dir:
                os.makedirs(self._dir, exist_ok=True)
            self._file = tempfile.NamedTemporaryFile(dir=self._dir, prefix="pyqd-result-", delete=False)
            for part in self._parts:
                self._file.write(part)
            self._parts = []
        if self._file is not None:
            self._file.write(data)
        else:
            self._parts.append(data)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def finish(self) -> Body:
        if self._file is None:
            return Body(b"".join(self._parts), None, self._size)
        self._file.close()
        return Body(None, self._file.name, self._size)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            Body(None, self._file.name, 0).discard()
        self._parts = []


class Assembler:
    """Feeds unit results, in order, into a sink in the shape of the verb: the answer body `{"result": ...}`.

    The `result` value is one value (do-eval, table-apply); for row-apply the records of all chunks when the
    first chunk returned a DataFrame (later chunks must too; None counts as no rows), else a list with one value
    per chunk; an object keyed by group (group-apply); a list in index order (index-apply). With graphics,
    OML's image rows; with `pickle`, one pickled (name, value, images) per unit for the Python client (the
    server only pickles plain bytes and strings; it never unpickles what a worker made)."""

    def __init__(
        self,
        kind: Kind,
        sink: Sink,
        *,
        graphics: bool = False,
        result_format: str = "json",
        output_limit: int = 10_000_000,
        output_max_bytes: int = 256 * 1024**2,
    ) -> None:
        self.kind, self.sink, self.graphics, self.format = kind, sink, graphics, result_format
        self.output_limit, self.output_max_bytes = output_limit, output_max_bytes
        if result_format != "pickle":
            sink.write(b'{"result":')  # the whole answer body, as OML frames it
        self.units = 0
        self.rows = 0
        self._splice: bool | None = None
        self._written = 0  # items written in the current list or object

    def add(self, r: Result) -> None:
        self.units += 1
        if self.format == "pickle":
            value = (r.name, r.json, [(i.png, i.title) for i in r.images])
            self.sink.write(pickle.dumps(value, protocol=5))
        elif self.graphics:
            self._add_graphics(r)
        elif self.kind in ("eval", "table"):
            if self.units == 1:
                self.sink.write(r.json)
        elif self.kind == "group":
            self._item(orjson.dumps(r.name) + b":" + r.json, b"{")
        elif self.kind == "row" and self._splice_mode(r):
            if not r.is_frame and r.json != b"null":
                raise ResultNotSerializable(
                    "row-apply chunks must all return DataFrames when the first one does "
                    f"(chunk {r.name} returned something else)"
                )
            self.rows += r.length if r.is_frame else 0
            if self.rows > self.output_limit:
                raise OutputTooLong(self.output_limit)
            if r.is_frame and len(r.json) > 2:
                self._item(r.json[1:-1], b"[")
        else:
            self._item(r.json, b"[")
        if self.kind in ("group", "index") or (self.kind == "row" and not self._splice):
            if self.units > self.output_limit:
                raise OutputTooLong(self.output_limit)
        if self.sink.size > self.output_max_bytes:
            raise OutputTooLarge(self.output_max_bytes)

    def _splice_mode(self, r: Result) -> bool:
        if self._splice is None:
            self._splice = r.is_frame
        return self._splice

    def _item(self, fragment: bytes, opening: bytes) -> None:
        self.sink.write((opening if self._written == 0 else b",") + fragment)
        self._written += 1

    def _add_graphics(self, r: Result) -> None:
        entries = _entries(r, named=self.kind in ("row", "index"))
        if self.kind == "group":
            self._item(orjson.dumps(r.name) + b":" + orjson.dumps(entries), b"{")
        else:
            for entry in entries:
                self._item(orjson.dumps(entry), b"[")

    def finish(self) -> Body:
        if self.format != "pickle":
            if self.kind in ("eval", "table") and not self.graphics:
                if self.units == 0:
                    self.sink.write(b"null")
            elif self._written == 0:
                self.sink.write(b"{}" if self.kind == "group" else b"[]")
            else:
                self.sink.write(b"}" if self.kind == "group" else b"]")
            self.sink.write(b"}")
        body = self.sink.finish()
        body.units = self.units
        return body


def _entries(r: Result, named: bool) -> list[dict[str, object]]:
    """OML's graphics rows: one per image ({IMAGE: base64 PNG, DATA: the value as a JSON string, ID: n});
    a call without images still gives one row, with IMAGE and ID null."""
    data = r.json.decode()
    rows: list[dict[str, object]] = [
        {"IMAGE": base64.b64encode(img.png).decode(), "DATA": data, "ID": i, "TITLE": img.title}
        for i, img in enumerate(r.images, start=1)
    ] or [{"IMAGE": None, "DATA": data, "ID": None, "TITLE": None}]
    if named:
        for row in rows:
            row["NAME"] = r.name
    return rows
