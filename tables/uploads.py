"""Reading an upload (CSV, Parquet, JSON) from a file in chunks, so memory holds one chunk, never the file.

The column types are settled over the whole file before anything is written: a first pass reads every chunk and
widens a column's type where a later chunk needs it (an integer column that later holds 2.5 becomes a float, one
that holds "n/a" becomes text), as a whole-file read would; the second pass yields the chunks in those types.
Parquet needs no first pass: its schema is in the footer.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tables.errors import InvalidTableData
from tables.frames import UploadFormat, to_text

#: Bytes of CSV parsed at a time, and bytes of JSON text decoded into one chunk of records. A Parquet chunk is
#: one row group (as the writer made it).
CHUNK_BYTES = 1024 * 1024
#: Largest Parquet row group, uncompressed as its footer says (it is read whole).
MAX_ROW_GROUP_BYTES = 256 * 1024 * 1024
#: Longest CSV row or JSON record accepted (a longer one, or an unclosed quote, would have to be held whole).
MAX_ROW_BYTES = 64 * 1024 * 1024
_ERRORS = (pa.ArrowException, ValueError, TypeError, OSError, UnicodeDecodeError, RecursionError)


@dataclass
class Upload:
    """An upload on disk: its settled schema, and its chunks in that schema (read again at each call)."""

    file: IO[bytes]
    fmt: UploadFormat
    schema: pa.Schema

    def chunks(self) -> Iterator[pa.Table]:
        self.file.seek(0)
        try:
            if self.fmt == "parquet":
                # Row group by row group (iter_batches keeps what it read: ~60 MB more for a 100 MB file here),
                # text kept dictionary-encoded as stored, then cut into pieces of a bounded decoded size: a small
                # file can hold millions of references to one long value (a "dictionary bomb").
                text = [f.name for f in self.schema if _is_text(f.type)]
                parquet = pq.ParquetFile(self.file, read_dictionary=text)
                for i in range(parquet.num_row_groups):
                    stored = parquet.metadata.row_group(i).total_byte_size
                    if stored > MAX_ROW_GROUP_BYTES:
                        raise InvalidTableData(
                            f"Row group {i} holds {stored} bytes uncompressed (at most {MAX_ROW_GROUP_BYTES}); "
                            "write the file with smaller row groups"
                        )
                    yield from _decoded_slices(parquet.read_row_group(i, use_threads=False), CHUNK_BYTES * 16)
            elif self.fmt == "csv":
                yield from _csv_tables(self.file, self.schema)
            else:
                for records in _json_records(self.file):
                    yield conform(_records_table(records, self.schema.names), self.schema)
        except InvalidTableData:
            raise
        except _ERRORS as e:
            raise InvalidTableData(f"Cannot read the {self.fmt} data: {e}") from None


def _decoded_slices(table: pa.Table, budget: int) -> Iterator[pa.Table]:
    """`table` in row slices whose dictionary-encoded columns, once decoded, take about `budget` bytes at most
    (a single row may be larger). Slicing copies nothing."""
    rows = table.num_rows
    if rows == 0:
        yield table
        return
    per_row = np.zeros(rows, dtype=np.int64)
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            lengths = []
            for chunk in col.chunks:
                sizes = pc.binary_length(chunk.dictionary).fill_null(0)
                lengths.append(pc.take(sizes, chunk.indices).fill_null(0).to_numpy(zero_copy_only=False))
            per_row += np.concatenate(lengths) if lengths else 0
        else:
            per_row += max(1, col.nbytes // rows)
    ends = np.cumsum(per_row)
    start, base = 0, 0
    while start < rows:
        stop = int(np.searchsorted(ends, base + budget, side="right"))
        stop = max(stop, start + 1)
        yield table.slice(start, stop - start)
        base = int(ends[stop - 1])
        start = stop


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def open_upload(file: IO[bytes], fmt: UploadFormat) -> Upload:
    """Read the upload once to settle its schema (InvalidTableData if it cannot be read)."""
    file.seek(0, io.SEEK_END)
    if file.tell() == 0:
        raise InvalidTableData("The request body is empty")
    file.seek(0)
    try:
        if fmt == "parquet":
            schema = pq.ParquetFile(file).schema_arrow
            nested = [f.name for f in schema if pa.types.is_nested(f.type)]
            if nested:  # they could hold text that no dictionary bound keeps small; a table column is flat anyway
                raise InvalidTableData(f"Nested Parquet columns are not supported (flatten them first): {nested}")
        elif fmt == "csv":
            schema = _csv_schema(file)
        else:
            schema = _json_schema(file)
    except InvalidTableData:
        raise
    except _ERRORS as e:
        raise InvalidTableData(f"Cannot read the {fmt} data: {e}") from None
    return Upload(file, fmt, schema)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The chunk with exactly the schema's columns and types (missing columns are null)."""
    arrays = []
    for field in schema:
        if field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            col = to_text(col) if pa.types.is_string(field.type) else col.cast(field.type)
        arrays.append(col)
    return pa.table(arrays, schema=schema)


def wider(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The narrowest type both chunks' values fit (text when nothing else does)."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()
    if (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return pa.float64()
    return pa.string()


# --- CSV -------------------------------------------------------------------------------------------------------
# The file is cut into pieces of about CHUNK_BYTES at line ends outside quoted fields, and each piece is parsed on
# its own with the header in front (pyarrow's streaming CSV reader reads many blocks ahead: ~30x its block size).


def _csv_pieces(file: IO[bytes]) -> Iterator[bytes]:
    """The header line, then whole-row pieces of about CHUNK_BYTES (a quoted field may hold line breaks)."""
    file.seek(0)
    carry = b""
    header: bytes | None = None
    while True:
        data = file.read(CHUNK_BYTES)
        buf = carry + data
        if not data:
            if buf.strip():
                if header is None:
                    yield buf if buf.endswith(b"\n") else buf + b"\n"
                    return
                yield buf
            return
        cut = _row_end(buf, 1 if header is None else None)
        if cut is None:
            if len(buf) > MAX_ROW_BYTES:
                raise InvalidTableData(f"A CSV row is longer than {MAX_ROW_BYTES} bytes (or a quote is never closed)")
            carry = buf
            continue
        piece, carry = buf[:cut], buf[cut:]
        if header is None:
            header = piece
            yield header
            cut = _row_end(carry)
            if cut is None:
                continue
            piece, carry = carry[:cut], carry[cut:]
        if piece:
            yield piece


def _row_end(buf: bytes, rows: int | None = None) -> int | None:
    """The index just past the last line break outside quotes (past the first one when `rows` is 1). Quotes are
    counted once over the buffer, whatever the number of line breaks inside a quoted field."""
    if rows == 1:
        pos, quotes = -1, 0
        while (nxt := buf.find(b"\n", pos + 1)) >= 0:
            quotes += buf.count(b'"', pos + 1, nxt)
            if quotes % 2 == 0:
                return nxt + 1
            pos = nxt
        return None
    total = buf.count(b'"')
    end, after = len(buf), 0  # quotes after the candidate line break
    while (pos := buf.rfind(b"\n", 0, end)) >= 0:
        after += buf.count(b'"', pos, end)
        if (total - after) % 2 == 0:
            return pos + 1
        end = pos
    return None


def _csv_tables(file: IO[bytes], schema: pa.Schema | None) -> Iterator[pa.Table]:
    pieces = _csv_pieces(file)
    header = next(pieces, None)
    if header is None:
        raise InvalidTableData("The CSV data is empty")
    convert = pa_csv.ConvertOptions(column_types=schema) if schema is not None else None

    def read(data: bytes) -> pa.Table:
        options = pa_csv.ReadOptions(block_size=max(CHUNK_BYTES, len(data) + 1))  # one block: a row never straddles
        return pa_csv.read_csv(io.BytesIO(data), read_options=options, convert_options=convert)

    first = True
    for piece in pieces:
        first = False
        yield read(header + piece)
    if first:  # a header alone: the columns, no rows
        yield read(header)


def _csv_schema(file: IO[bytes]) -> pa.Schema:
    """Each piece's inferred types, widened over the whole file as a whole-file read would."""
    schema: pa.Schema | None = None
    for table in _csv_tables(file, None):
        if schema is None:
            schema = table.schema
            continue
        if table.schema.names != schema.names:
            raise InvalidTableData("The CSV rows do not match its header")
        for i, field in enumerate(table.schema):
            if field.type != schema.field(i).type:
                schema = schema.set(i, pa.field(field.name, wider(schema.field(i).type, field.type)))
    assert schema is not None
    return schema


# --- JSON ------------------------------------------------------------------------------------------------------


def _json_schema(file: IO[bytes]) -> pa.Schema:
    """The columns of the first record, each typed wide enough for every chunk."""
    names: list[str] | None = None
    types: dict[str, pa.DataType] = {}
    for records in _json_records(file):
        if names is None:
            names = list(records[0])
        for field in _records_table(records, names).schema:
            types[field.name] = wider(types[field.name], field.type) if field.name in types else field.type
    if names is None:
        raise InvalidTableData("JSON data has no records")
    return pa.schema([(n, types[n]) for n in names])


def _records_table(records: list[dict[str, Any]], names: list[str]) -> pa.Table:
    """A chunk of records as columns `names` (a record without a key has null there)."""
    return pa.table({name: pa.array([r.get(name) for r in records]) for name in names})


def _json_records(file: IO[bytes]) -> Iterator[list[dict[str, Any]]]:
    """Chunks of records from a JSON array of objects or an ORDS page `{"items": [...], ...}`."""
    reader = _JsonReader(file)
    chunk: list[dict[str, Any]] = []
    start = reader.consumed
    for record in reader.records():
        if not isinstance(record, dict):
            raise InvalidTableData("JSON data must be a list of records (objects)")
        chunk.append(record)
        if reader.consumed - start >= CHUNK_BYTES:
            yield chunk
            chunk, start = [], reader.consumed
    if chunk:
        yield chunk


class _JsonReader:
    """Top-level JSON values read one at a time from a file with the C decoder, holding a few MiB of text."""

    def __init__(self, file: IO[bytes]) -> None:
        file.seek(0)
        self.file = file
        self.decode = codecs.getincrementaldecoder("utf-8-sig")()
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        #: Characters consumed so far (how chunks are sized).
        self.consumed = 0

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.file.read(CHUNK_BYTES)
        self.eof = not data
        self.buf = self.buf[self.pos :] + self.decode.decode(data, final=self.eof)
        self.pos = 0
        return not self.eof or bool(self.buf)

    def peek(self) -> str:
        """The next non-blank character ('' at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
                self.consumed += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof or not self._fill():
                return ""

    def take(self, char: str) -> None:
        if self.peek() != char:
            found = self.peek() or "the end"
            raise InvalidTableData(f"Malformed JSON data: expected {char!r}, found {found!r}")
        self.pos += 1
        self.consumed += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # A value cut by the end of the buffer: read more and decode it again, else it is malformed.
                if len(self.buf) - self.pos > MAX_ROW_BYTES:
                    raise InvalidTableData(f"A JSON record is longer than {MAX_ROW_BYTES} bytes") from None
                if not self.eof and self._fill():
                    continue
                raise InvalidTableData(f"Malformed JSON data: {e.msg} (at character {self.consumed})") from None
            if end == len(self.buf) and not self.eof and self._more_could_follow(value):
                self._fill()
                continue
            self.consumed += end - self.pos
            self.pos = end
            return value

    @staticmethod
    def _more_could_follow(value: Any) -> bool:
        # A number or literal that ends exactly at the end of the buffer may go on in the next read.
        return not isinstance(value, dict | list | str)

    def records(self) -> Iterator[Any]:
        first = self.peek()
        if first == "[":
            yield from self._array()
        elif first == "{":
            yield from self._objects()
        else:
            raise InvalidTableData("JSON data must be a list of records (objects)")
        if self.peek():
            raise InvalidTableData("Malformed JSON data: extra data after the records")

    def _array(self) -> Iterator[Any]:
        self.take("[")
        if self.peek() == "]":
            self.take("]")
            return
        while True:
            yield self.value()
            if self.peek() == ",":
                self.take(",")
                continue
            self.take("]")
            return

    def _objects(self) -> Iterator[Any]:
        """An ORDS page: an object whose `items` array holds the records (read key by key, the array streamed)."""
        self.take("{")
        first = True
        while self.peek() != "}":
            if not first:
                self.take(",")
            first = False
            key = self.value()
            self.take(":")
            if key == "items" and self.peek() == "[":
                yield from self._array()
                self._skip_rest_of_object()
                return
            self.value()
        raise InvalidTableData("JSON data must be a list of records (objects), or an object with an items list")

    def _skip_rest_of_object(self) -> None:
        while self.peek() == ",":
            self.take(",")
            self.value()
            self.take(":")
            self.value()
        self.take("}")
