"""The messages of the worker channel (`engines.channel`): how each is written, and how the server reads
the ones a worker sends, field by field, trusting nothing.

server → worker
    task           {t, call_id, user, script_name, source, kind, units: [[name, index|nil, batch|nil]...],
                    kwargs: JSON text, input_type, na_omit, graphics, oml, datastore_generation, output_limit,
                    result_format}; blobs: the Arrow IPC streams of the units' input, in order
    http-response  {t, status, headers: [[bin, bin]...]}; blob 0: the body
    model          {t, seq, kind, digest}; blob 0: a stored model's bytes (load it, keep it, describe it)
    score          {t, seq, kind, digest, images, max_bytes}; blob 0: an OML Services score body (JSON), or each
                   blob an image file

worker → server
    ready          {t, pid, confinement}
    failed         {t, error}
    http           {t, method, path, headers: [[bin, bin]...]}; blob 0: the body (a request of `import oml`)
    results        {t, units: [{name, ok, is_frame, length, stdout, error, failure, value, images}...]};
                   `value`, `stdout` (UTF-8) and each image's `png` are blob numbers; an image is [png, title|nil]
    model-info     {t, seq, ok, error|nil}; blob 0: the model's metadata as a JSON object (empty when not ok)
    scored         {t, seq, ok, failure: "input"|"model"|"size"|nil, error|nil}; blob 0: the answer's JSON (empty
                   when not ok). `seq` echoes the request's: an answer to another request kills the worker

A worker message that breaks these rules raises `ChannelError` (the server kills the worker).
"""

from __future__ import annotations

import json
from typing import Any, get_args

from engines.channel import Blob, Channel, ChannelError
from engines.protocol import FailureKind, Image, Result, Task, Unit

__all__ = ["ChannelError", "clip"]

#: Largest header a worker may send, bytes: its units' names, flags and errors (output travels in blobs).
WORKER_MAX_HEADER = 1024 * 1024
#: Most items of one array or map in a worker's header (a task has at most a few thousand units).
WORKER_MAX_ITEMS = 65_536

#: Most characters of an error message a worker may send (longer ones are clipped, with a note).
MAX_ERROR_CHARS = 64 * 1024
#: Most characters of print() output a worker may send per unit.
MAX_STDOUT_CHARS = 64 * 1024
#: Methods a script's `import oml` may use through the channel.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
#: Longest bridged request path.
MAX_PATH = 8192
_FAILURES = frozenset(get_args(FailureKind))


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text`, or its first `limit` characters and a note that the rest was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... clipped: {len(text) - limit} more characters]"


# -- server → worker -----------------------------------------------------------------------------------
def send_task(channel: Channel, task: Task, data: list[bytes], deadline: float | None = None) -> None:
    header = {
        "t": "task",
        "call_id": task.call_id,
        "user": task.user,
        "script_name": task.script_name,
        "source": task.source,
        "kind": task.kind,
        "units": [[u.name, u.index, u.batch] for u in task.units],
        "kwargs": json.dumps(task.kwargs),
        "input_type": task.input_type,
        "na_omit": task.na_omit,
        "graphics": task.graphics,
        "oml": task.oml,
        "datastore_generation": task.datastore_generation,
        "output_limit": task.output_limit,
        "output_max_bytes": task.output_max_bytes,
        "result_format": task.result_format,
    }
    channel.send(header, data, deadline)


def read_task(header: dict[str, Any], blobs: list[Blob]) -> tuple[Task, list[Blob]]:
    """The task the server sent (the worker trusts the server; this only rebuilds the dataclass)."""
    fields = {k: v for k, v in header.items() if k not in ("t", "units", "kwargs")}
    units = [Unit(name, index, batch) for name, index, batch in header["units"]]
    return Task(units=units, kwargs=json.loads(header["kwargs"]), data_messages=len(blobs), **fields), blobs


def send_response(
    channel: Channel, status: int, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float | None = None
) -> None:
    channel.send({"t": "http-response", "status": status, "headers": [list(h) for h in headers]}, [body], deadline)


def send_model(channel: Channel, seq: int, kind: str, digest: str, data: bytes, deadline: float | None = None) -> None:
    channel.send({"t": "model", "seq": seq, "kind": kind, "digest": digest}, [data], deadline)


def send_score(
    channel: Channel,
    seq: int,
    kind: str,
    digest: str,
    body: bytes,
    images: list[bytes] | None = None,
    max_bytes: int = 256 * 1024**2,
    deadline: float | None = None,
) -> None:
    header = {"t": "score", "seq": seq, "kind": kind, "digest": digest, "images": images is not None}
    channel.send({**header, "max_bytes": max_bytes}, [body] if images is None else images, deadline)


# -- worker → server (scoring) -------------------------------------------------------------------------
def send_model_info(channel: Channel, seq: int, metadata: bytes | None, error: str | None) -> None:
    header = {"t": "model-info", "seq": seq, "ok": error is None, "error": None if error is None else clip(error)}
    channel.send(header, [metadata or b""])


def send_scored(
    channel: Channel, seq: int, body: bytes | None, failure: str | None = None, error: str | None = None
) -> None:
    header = {"t": "scored", "seq": seq, "ok": failure is None, "failure": failure}
    channel.send({**header, "error": None if error is None else clip(error)}, [body or b""])


#: Largest model description a worker may send, bytes.
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: How a score request failed: the caller's input, the model, or an answer over the size limit.
SCORE_FAILURES = frozenset({"input", "model", "size"})


def _answer_to(header: dict[str, Any], blobs: list[Blob], kind: str, seq: int) -> None:
    """The answer is a `kind` message with one blob, to the request numbered `seq` (a stale or extra answer,
    say from a process the model forked, breaks the channel's rules: the worker is killed)."""
    if header.get("t") != kind or len(blobs) != 1:
        raise ChannelError(f"{kind}: malformed")
    if type(header.get("seq")) is not int or header["seq"] != seq:
        raise ChannelError(f"{kind}: an answer to another request")


def read_model_info(header: dict[str, Any], blobs: list[Blob], seq: int) -> tuple[bytes | None, str | None]:
    """(metadata JSON, None) or (None, why the model could not be loaded); ChannelError if malformed."""
    _answer_to(header, blobs, "model-info", seq)
    ok, error = header.get("ok"), header.get("error")
    if type(ok) is not bool or (error is not None and not isinstance(error, str)) or ok != (error is None):
        raise ChannelError("model-info: bad ok/error")
    if not ok:
        return None, clip(error or "")
    if len(blobs[0]) > MAX_METADATA_BYTES:
        raise ChannelError("model-info: metadata too large")
    return bytes(blobs[0]), None


def read_scored(header: dict[str, Any], blobs: list[Blob], seq: int) -> tuple[bytes, str | None, str | None]:
    """(answer JSON, failure kind, error): the failure is "input" (the caller's request), "model" (the model
    raised) or "size"; ChannelError if malformed. The answer's shape is checked by `engines.scoring`."""
    _answer_to(header, blobs, "scored", seq)
    ok, failure, error = header.get("ok"), header.get("failure"), header.get("error")
    if type(ok) is not bool or ok != (failure is None) or ok != (error is None):
        raise ChannelError("scored: bad ok/failure/error")
    if failure is not None and (not isinstance(failure, str) or failure not in SCORE_FAILURES):
        raise ChannelError("scored: bad failure")
    if failure is not None and not isinstance(error, str):
        raise ChannelError("scored: bad error")
    return bytes(blobs[0]), failure, None if error is None else clip(error)


def send_results(channel: Channel, results: list[Result]) -> None:
    channel.send(*results_message(results))


def results_message(results: list[Result]) -> tuple[dict[str, Any], list[Blob]]:
    """The `results` message of a task (header and blobs), as `read_results` checks it."""
    blobs: list[Blob] = []
    units = []
    for r in results:
        images = []
        for image in r.images:
            images.append([len(blobs), image.title])
            blobs.append(image.png)
        blobs.append(clip(r.stdout, MAX_STDOUT_CHARS).encode("utf-8", "replace"))
        units.append(
            {
                "name": r.name,
                "ok": r.ok,
                "is_frame": r.is_frame,
                "length": r.length,
                "stdout": len(blobs) - 1,
                "error": None if r.error is None else clip(r.error),
                "failure": r.failure,
                "value": len(blobs),
                "images": images,
            }
        )
        blobs.append(r.json)
    return {"t": "results", "units": units}, blobs


def send_request(
    channel: Channel, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A request of the script's `import oml`, and the server's answer (status, headers, body)."""
    channel.send({"t": "http", "method": method, "path": path, "headers": [list(h) for h in headers]}, [body])
    header, blobs = channel.recv()
    if header.get("t") != "http-response" or len(blobs) != 1:
        raise ChannelError("the server did not answer the request")
    return int(header["status"]), [(bytes(k), bytes(v)) for k, v in header["headers"]], bytes(blobs[0])


def read_results(header: dict[str, Any], blobs: list[Blob], expected: list[Unit]) -> list[Result]:
    """A worker's `results` message, checked against the units it was given (in order, at most all of them,
    stopping after the first failure); ChannelError on anything else. The values are not parsed: parsing JSON
    costs up to ~30 times its size in memory, and the server only splices them into the caller's answer."""
    units = header.get("units")
    if not isinstance(units, list) or not 1 <= len(units) <= max(1, len(expected)):
        raise ChannelError("results: wrong number of units")
    used: set[int] = set()
    results = []
    for i, item in enumerate(units):
        if not isinstance(item, dict):
            raise ChannelError("results: a unit is not a map")
        name = _typed(item, "name", str)
        if expected and name != expected[i].name:
            raise ChannelError("results: units out of order")
        ok = _typed(item, "ok", bool)
        failure: FailureKind | None = item.get("failure")
        if failure is not None and (not isinstance(failure, str) or failure not in _FAILURES):
            raise ChannelError("results: unknown failure kind")
        error = item.get("error")
        if error is not None and not isinstance(error, str):
            raise ChannelError("results: error is not text")
        images = item.get("images")
        if not isinstance(images, list):
            raise ChannelError("results: images is not a list")
        pictures = []
        for image in images:
            if not (isinstance(image, list) and len(image) == 2 and (image[1] is None or isinstance(image[1], str))):
                raise ChannelError("results: malformed image")
            pictures.append(Image(bytes(_blob(blobs, image[0], used)), image[1]))
        length = _typed(item, "length", int)
        if length < 0:
            raise ChannelError("results: negative length")
        value = _blob(blobs, item.get("value"), used)
        is_frame = _typed(item, "is_frame", bool)
        results.append(
            Result(
                name=name,
                ok=ok,
                json=value,
                is_frame=is_frame,
                length=length,
                images=pictures,
                stdout=_text(_blob(blobs, item.get("stdout"), used), MAX_STDOUT_CHARS),
                error=None if error is None else clip(error),
                failure=failure,
            )
        )
        if not ok:
            break
    if len(results) != len(units):
        raise ChannelError("results: units after a failure")
    return results


def read_request(header: dict[str, Any], blobs: list[Blob]) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    """A bridged request from a worker's `import oml`: (method, path, headers, body); ChannelError if malformed."""
    method, path, headers = header.get("method"), header.get("path"), header.get("headers")
    if method not in HTTP_METHODS or not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
        raise ChannelError("http: bad method or path")
    if not isinstance(headers, list) or len(headers) > 100 or len(blobs) != 1:
        raise ChannelError("http: bad headers or body")
    pairs = []
    for h in headers:
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, bytes) and len(x) < 16384 for x in h)):
            raise ChannelError("http: malformed header")
        pairs.append((h[0], h[1]))
    return method, path, pairs, bytes(blobs[0])


def _text(blob: Blob, limit: int) -> str:
    """UTF-8 text of at most `limit` characters, decoding no more than it can need (4 bytes a character)."""
    return clip(bytes(memoryview(blob)[: 4 * limit + 4]).decode("utf-8", "replace"), limit)


def _typed(item: dict[str, Any], key: str, kind: type) -> Any:
    value = item.get(key)
    if type(value) is not kind:  # exact: bool is not an int here, nor an int a bool
        raise ChannelError(f"results: {key} is not {kind.__name__}")
    return value


def _blob(blobs: list[Blob], index: object, used: set[int]) -> bytes:
    if type(index) is not int or not 0 <= index < len(blobs) or index in used:
        raise ChannelError("results: bad blob reference")
    used.add(index)
    return blobs[index]  # type: ignore[return-value]  # bytes or bytearray: both serve as bytes here
