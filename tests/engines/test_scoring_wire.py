"""Attacks on the scoring messages of the worker channel (`model`/`model-info`, `score`/`scored`), written as a
hostile model's owner would: a PYTHON model whose unpickling, in the owner's real sandboxed worker, replaces the
worker's own answers with forged ones. Whatever the worker sends, the server kills it and the call fails
cleanly, nothing runs in the server, and the next call gets a fresh worker that works."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator

import orjson
import pytest

from engines.errors import ModelUnreadable, TimeLimitExceeded, WorkerCrashed
from engines.pool import PoolConfig, WorkerPool
from engines.protocol import WorkerLimits
from engines.scoring import Scorer, ScoringLimits, ScoringModel
from models.service import digest_of
from tests.conftest import wait_for
from tests.engines.test_sandbox_attacks import gone

#: Largest message a worker of this file's pool may send, bytes (small, so an oversize answer is cheap to make).
MAX_MESSAGE = 4 * 1024 * 1024
#: Seconds a score may take here: long enough for a busy machine, short enough for the half-sent frame.
SCORE_LIMIT_S = 3.0


def hostile_pickle(source: str) -> bytes:
    """A pickle that, when loaded, runs `source` (which binds `model`) and is that model: what an attacker
    uploads as a PYTHON model. Only builtins are named, so it loads in any worker."""

    class Payload:
        def __reduce__(self):  # noqa: ANN204 - pickle's protocol
            return (eval, (f"(lambda ns: (exec({source!r}, ns), ns['model'])[1])({{}})",))

    return pickle.dumps(Payload())


#: A regression over one column x0: answers the worker's pid for x0 == 0, else 2 * x0.
BASE_MODEL = """
import os
import numpy as np

class Model:
    n_features_in_ = 1

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return np.where(X[:, 0] == 0, float(os.getpid()), X[:, 0] * 2.0)

model = Model()
"""


def body(x0: float) -> bytes:
    return orjson.dumps({"inputRecords": [{"x0": x0}]})


def results(answer: bytes) -> list[object]:
    return orjson.loads(answer)["scoringResults"]


# -- forged `scored` answers ---------------------------------------------------------------------------------
#: The worker's own `engines.wire.send_scored` is replaced while the model is unpickled; for the input x0 = -k
#: it sends FORGED[k] instead of the real answer. A spec is ("msg", header, blobs), ("big", header, size) (one
#: blob of `size` bytes), ("raw", frame) or ("half", frame) (a frame cut short, then silence).
FORGE_SCORED = """
import struct
import msgpack
import engines.wire as wire

_send_scored = wire.send_scored
_plan = []

def _seq(header, seq):
    # the answer names the request it answers (forging that too is its own case)
    return {**header, "seq": seq} if isinstance(header, dict) and "seq" not in header else header

def _forged(channel, seq, body, failure=None, error=None):
    spec = FORGED.get(_plan.pop()) if _plan else None
    if spec is None:
        return _send_scored(channel, seq, body, failure, error)
    kind = spec[0]
    if kind == "msg":
        channel.send(_seq(spec[1], seq), spec[2])
    elif kind == "big":
        channel.send(_seq(spec[1], seq), [b"x" * spec[2]])
    elif kind == "raw":
        channel.sock.sendall(spec[1])
    elif kind == "half":
        channel.sock.sendall(spec[1][: len(spec[1]) // 2])

wire.send_scored = _forged

class Model:
    n_features_in_ = 1

    def predict(self, X):
        import os
        import numpy as np
        X = np.asarray(X, dtype=float)
        if X[0, 0] < 0:
            _plan.append(int(-X[0, 0]))
        return np.where(X[:, 0] == 0, float(os.getpid()), np.abs(X[:, 0]) * 2.0)

model = Model()
"""

_OK = {"t": "scored", "ok": True, "failure": None, "error": None}


def _frame(header: object, blobs: list[bytes]) -> bytes:
    import struct

    import msgpack

    packed = msgpack.packb(header, use_bin_type=True)
    out = struct.pack("!II", len(packed), len(blobs)) + packed
    for b in blobs:
        out += struct.pack("!Q", len(b)) + b
    return out


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (eval, ("open('/tmp/pyqd-scoring-wire-pwned', 'w').write('pwned')",))


#: What a hostile worker answers to a `score`: name → spec (see FORGE_SCORED).
FORGED: dict[str, tuple] = {
    "ok-and-a-failure": ("msg", {**_OK, "failure": "input"}, [b""]),
    "a-failure-but-ok": ("msg", {**_OK, "ok": False, "error": "x"}, [b""]),
    "ok-not-a-bool": ("msg", {**_OK, "ok": 1}, [b'{"scoringResults": []}']),
    "unknown-failure": ("msg", {**_OK, "ok": False, "failure": "server", "error": "x"}, [b""]),
    "error-not-text": ("msg", {**_OK, "ok": False, "failure": "model", "error": 42}, [b""]),
    "ok-with-an-error": ("msg", {**_OK, "error": "x"}, [b'{"scoringResults": []}']),
    "two-blobs": ("msg", _OK, [b'{"scoringResults": []}', b"extra"]),
    "no-blob": ("msg", _OK, []),
    "wrong-message": ("msg", {"t": "model-info", "ok": True, "error": None}, [b"{}"]),
    "results-message": ("msg", {"t": "results", "units": []}, []),
    # a model trying `import oml` from a scoring worker: there is no bridge there
    "bridged-request": (
        "msg",
        {"t": "http", "method": "GET", "path": "/oml/api/py-scripts/v1/scripts", "headers": []},
        [b""],
    ),
    "huge-error": ("msg", {**_OK, "ok": False, "failure": "model", "error": "e" * (2 * 1024 * 1024)}, [b""]),
    "oversize-answer": ("big", _OK, MAX_MESSAGE + 1),
    "not-a-map": ("raw", _frame(["scored", True], [b""])),
    "no-type": ("raw", _frame({"ok": True}, [b""])),
    "pickle-header": ("raw", (lambda p: __import__("struct").pack("!II", len(p), 0) + p)(pickle.dumps(_Evil()))),
    "huge-header-claim": ("raw", b"\xff\xff\xff\xff\x00\x00\x00\x00"),
    "another-requests-answer": ("msg", {**_OK, "seq": 0}, [b'{"scoringResults": [{"regression": 1.0}]}']),
}
#: Listed apart: the worker sends half a frame and stops (the deadline ends it, not a parse).
HALF_FRAME = ("half", _frame(_OK, [b'{"scoringResults": [{"regression": 1.0}]}']))


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(
        PoolConfig(
            size=2,
            warm=1,
            preload="sklearn.linear_model",
            limits=WorkerLimits(memory_bytes=2 << 30),
            max_message_bytes=MAX_MESSAGE,
        )
    )
    p.start()
    yield p
    p.close()


@pytest.fixture(scope="module")
def scorer(pool: WorkerPool) -> Scorer:
    return Scorer(pool, ScoringLimits(score_time_limit_s=SCORE_LIMIT_S, load_time_limit_s=60, worker_wait_s=60))


@pytest.fixture(scope="module")
def forger(scorer: Scorer) -> tuple[ScoringModel, bytes]:
    specs = {i + 1: spec for i, spec in enumerate([*FORGED.values(), HALF_FRAME])}
    data = hostile_pickle(f"FORGED = {specs!r}\n" + FORGE_SCORED)
    model = ScoringModel("MALLORY", "PYTHON", digest_of(data))
    description = scorer.inspect(model, data)
    assert description["attributes"] == [{"name": "x0", "attributeType": "NUMERICAL"}]
    return model, data


def _pid(scorer: Scorer, model: ScoringModel, data: bytes) -> int:
    (answer,) = results(scorer.score(model, model.owner, body(0), lambda: data))
    return int(answer["regression"])  # type: ignore[index]


def _forge_code(name: str) -> float:
    return -float(list(FORGED).index(name) + 1)


@pytest.mark.parametrize(
    "how",
    [
        *(n for n in FORGED),
        "unhashable-failure",
    ],
)
def test_a_forged_scored_answer_kills_the_worker_and_the_next_score_works(scorer, forger, how, tmp_path):
    model, data = forger
    if how == "unhashable-failure":  # a variant outside FORGED's numbering: its own model
        specs = {1: ("msg", {**_OK, "ok": False, "failure": ["input"], "error": "x"}, [b""])}
        data = hostile_pickle(f"FORGED = {specs!r}\n" + FORGE_SCORED)
        model = ScoringModel("MALLORY", "PYTHON", digest_of(data))
        scorer.inspect(model, data)
        code = -1.0
    else:
        code = _forge_code(how)
    pid = _pid(scorer, model, data)
    with pytest.raises(WorkerCrashed, match="malformed message"):
        scorer.score(model, model.owner, body(code), lambda: data)
    wait_for(lambda: gone(pid), timeout=30)
    import os

    assert not os.path.exists("/tmp/pyqd-scoring-wire-pwned")  # the pickle in a header never ran here
    assert results(scorer.score(model, model.owner, body(21), lambda: data)) == [{"regression": 42.0}]
    assert _pid(scorer, model, data) != pid


def test_a_half_sent_answer_ends_at_the_time_limit_and_the_next_score_works(scorer, forger):
    model, data = forger
    pid = _pid(scorer, model, data)
    with pytest.raises(TimeLimitExceeded):
        scorer.score(model, model.owner, body(-float(len(FORGED) + 1)), lambda: data)
    wait_for(lambda: gone(pid), timeout=30)
    assert results(scorer.score(model, model.owner, body(4), lambda: data)) == [{"regression": 8.0}]


# -- forged `model-info` answers -----------------------------------------------------------------------------
#: The worker's `engines.wire.send_model_info` is replaced while the model loads, so the answer to this very
#: `model` message is SPEC: ("msg", header, blobs) or ("big", header, size).
FORGE_MODEL_INFO = """
import engines.wire as wire

def _forged(channel, seq, metadata, error):
    header = {**SPEC[1], "seq": seq} if "seq" not in SPEC[1] else SPEC[1]
    if SPEC[0] == "msg":
        channel.send(header, SPEC[2])
    else:
        channel.send(header, [SPEC[3] * SPEC[2]])

wire.send_model_info = _forged

class Model:
    n_features_in_ = 1
    def predict(self, X):
        return X[:, 0]

model = Model()
"""
_INFO = {"t": "model-info", "ok": True, "error": None}
_META = {
    "miningFunction": "REGRESSION",
    "algorithm": "PYTHON",
    "attributes": [{"name": "x0", "attributeType": "NUMERICAL"}],
}

#: name → (spec, what the store fails with).
FORGED_INFO: dict[str, tuple[tuple, str]] = {
    # checked by the channel's reader: the worker is killed
    "oversize-metadata": (("big", _INFO, 4 * 1024 * 1024 + 1, b" "), "malformed message"),
    "ok-and-an-error": (("msg", {**_INFO, "error": "x"}, [orjson.dumps(_META)]), "malformed message"),
    "not-ok-no-error": (("msg", {**_INFO, "ok": False}, [b""]), "malformed message"),
    "ok-not-a-bool": (("msg", {**_INFO, "ok": "yes"}, [orjson.dumps(_META)]), "malformed message"),
    "two-blobs": (("msg", _INFO, [orjson.dumps(_META), b"x"]), "malformed message"),
    "wrong-message": (("msg", {**_OK}, [orjson.dumps(_META)]), "malformed message"),
    # well-formed messages whose description breaks the rules
    "not-json": (("msg", _INFO, [b"\x80\x81 not json"]), "does not follow the rules"),
    "not-an-object": (("msg", _INFO, [b"[1, 2, 3]"]), "does not follow the rules"),
    "extra-field": (("msg", _INFO, [orjson.dumps({**_META, "modelName": "forged"})]), "does not follow the rules"),
    "bad-function": (("msg", _INFO, [orjson.dumps({**_META, "miningFunction": "<script>"})]), "does not follow"),
    "long-name": (
        ("msg", _INFO, [orjson.dumps({**_META, "attributes": [{"name": "n" * 513, "attributeType": "FLOAT"}]})]),
        "does not follow the rules",
    ),
    "too-many-attributes": (
        ("msg", _INFO, [orjson.dumps({**_META, "attributes": [{"name": "a", "attributeType": "FLOAT"}] * 10_001})]),
        "does not follow the rules",
    ),
    "huge-error-text": (("msg", {**_INFO, "ok": False, "error": "e" * (2 * 1024 * 1024)}, [b""]), "malformed message"),
}


def _assert_pool_works(scorer: Scorer) -> None:
    data = hostile_pickle(BASE_MODEL)
    model = ScoringModel("ALICE", "PYTHON", digest_of(data))
    scorer.inspect(model, data)
    assert results(scorer.score(model, model.owner, body(3), lambda: data)) == [{"regression": 6.0}]


@pytest.mark.parametrize(
    "how",
    [
        *(n for n in FORGED_INFO),
        "deeply-nested-metadata",
    ],
)
def test_a_forged_model_info_fails_the_store_and_kills_the_worker(scorer, pool, how):
    if how == "deeply-nested-metadata":
        spec, expected = ("big", _INFO, 1024 * 1024, b"["), "does not follow the rules"
    else:
        spec, expected = FORGED_INFO[how]
    data = hostile_pickle(f"SPEC = {spec!r}\n" + FORGE_MODEL_INFO)
    model = ScoringModel("MALLORY", "PYTHON", digest_of(data))
    with pytest.raises(ModelUnreadable, match=expected):
        scorer.inspect(model, data)
    # the worker that lied is not kept for the model's key
    wait_for(lambda: pool.stats()["busy"] == 0, timeout=30)
    assert not pool._idle.get(model.key(model.owner))  # noqa: SLF001 - who the pool keeps is the point
    _assert_pool_works(scorer)


#: For x0 == 13, predict forks and both processes go on: each answers the same `score`.
TWINS = """
import os
import numpy as np

class Model:
    n_features_in_ = 1

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if X[0, 0] == 13:
            os.fork()
        return X[:, 0] * 2.0

model = Model()
"""


def test_a_worker_that_answers_twice_cannot_hand_one_callers_answer_to_the_next(scorer):
    data = hostile_pickle(TWINS)
    model = ScoringModel("MALLORY", "PYTHON", digest_of(data))
    scorer.inspect(model, data)
    assert results(scorer.score(model, model.owner, body(13), lambda: data)) == [{"regression": 26.0}]
    # The twin's stray answer arrives at some later request: each answer before it is that request's own, and
    # the stray one is refused (the worker and its fork are killed), never handed to the caller.
    deadline = time.monotonic() + 60
    x = 1.0
    while True:
        x += 1
        try:
            assert results(scorer.score(model, model.owner, body(x), lambda: data)) == [{"regression": 2 * x}]
        except WorkerCrashed:  # "an answer to another request" (or, if both twins read one request, a torn one)
            break
        assert time.monotonic() < deadline, "the stray answer never came"
    assert results(scorer.score(model, model.owner, body(3), lambda: data)) == [{"regression": 6.0}]
