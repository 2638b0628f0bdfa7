"""Scoring deployed models (OML Services), the server's side: a model is loaded and run only in sandboxed
workers of its owner (`engines.worker.scoring`); the server hands them bytes and forwards their answers, and
never parses a model or unpickles anything.

Workers are taken for the key (caller, model): the caller's share of the pool pays for them, as for a script of
someone else's that the caller runs; a model never shares a process with another model or with another user's
code or data (what one caller sends a shared model cannot reach the next caller's answers). A deployment stays
warm: its model is loaded once per worker, when the worker first serves it. A worker that crashes, breaks the
channel's rules or runs past the time limit is killed: that request fails, the next one gets a fresh worker that
loads the model again. Every request carries a sequence number its answer must echo, so a stray answer (say
from a process the model forked) can never be taken for the answer to a later request.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines import wire
from engines.errors import (
    ModelFailed,
    ModelUnreadable,
    OutputTooLarge,
    ScoreRejected,
    TimeLimitExceeded,
    WorkerCrashed,
)
from engines.pool import WorkerDied, WorkerTimedOut
from engines.spec import WORKER_KEY_SEPARATOR
from engines.workers import ModelWorker, Workers


@dataclass(frozen=True)
class ScoringModel:
    """What a worker needs to know of a stored model: whose it is, its type, and which bytes."""

    owner: str
    kind: str
    digest: str

    def key(self, caller: str) -> str:
        """The pool key of the caller's workers for this model (the pool counts them against the caller)."""
        return f"{caller}{WORKER_KEY_SEPARATOR}model:{self.owner}:{self.kind}:{self.digest}"

    @property
    def loaded(self) -> str:
        """What a worker that has loaded this model says it holds (`ModelWorker.model`)."""
        return f"{self.kind}:{self.digest}"


@dataclass(frozen=True)
class ScoringLimits:
    #: Seconds one score request may take in the worker.
    score_time_limit_s: float = 30.0
    #: Seconds a worker may take to load a model.
    load_time_limit_s: float = 300.0
    #: How long a request waits for a free worker.
    worker_wait_s: float = 30.0
    #: Largest answer, bytes (PYQD_OUTPUT_MAX_BYTES).
    max_answer_bytes: int = 256 * 1024**2


# -- what a worker may say about a model ---------------------------------------------------------------
_Name = Annotated[str, Field(min_length=1, max_length=512)]
AttributeType = Literal[
    "CATEGORICAL",
    "NUMERICAL",
    "TEXT",
    "BINARY",
    "NESTED_NUMERICAL",
    "NESTED_CATEGORICAL",
    "FLOAT",
    "FLOAT16",
    "DOUBLE",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "BOOL",
    "STRING",
    "UNKNOWN",
]


class MetadataAttribute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: _Name
    attributeType: AttributeType
    shape: Annotated[list[int], Field(max_length=8)] | None = None


class ModelDescription(BaseModel):
    """OML Services' ModelMetadata as a worker read it from the model (modelName is the server's to add)."""

    model_config = ConfigDict(extra="forbid")
    miningFunction: Literal["CLASSIFICATION", "REGRESSION", "CLUSTERING", "FEATURE_EXTRACTION"]
    algorithm: Annotated[str, Field(max_length=64, pattern=r"^[A-Z_]+$")]
    attributes: Annotated[list[MetadataAttribute], Field(max_length=10_000)]
    onnxAttributes: Annotated[list[MetadataAttribute], Field(max_length=10_000)] | None = None
    outputs: Annotated[list[MetadataAttribute], Field(max_length=1_000)] | None = None
    labels: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=100_000)] | None = None
    estimator: Annotated[str, Field(max_length=256)] | None = None


def check_description(data: bytes) -> dict[str, Any]:
    """The worker's description of a model, checked field by field; ModelUnreadable when it breaks the rules."""
    try:
        return ModelDescription.model_validate(orjson.loads(data)).model_dump(exclude_none=True)
    except (ValueError, ValidationError) as e:  # orjson's JSONDecodeError (and its depth limit) is a ValueError
        raise ModelUnreadable(f"the model's description does not follow the rules: {str(e)[:500]}") from None


#: OML Services' scoringResults exactly as a worker writes it (orjson: no spaces, keys in the renderers' order,
#: `engines/worker/scoring.py`), as a grammar over the bytes. Checking it makes no objects: ~1 ms for 1,000 rows of
#: three classes against ~2.3 ms for pydantic-core's JSON validation, and the server's CPU per such call fell 3.7 →
#: 2.1 ms. Possessive quantifiers: no backtracking, linear in the answer's size.
_S = rb'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'
_N = rb"(?:-?(?:0|[1-9]\d*+)(?:\.\d++)?(?:[eE][+-]?\d++)?|null)"
_CLASS = rb'\{"label":' + _S + rb'(?:,"probability":' + _N + rb")?\}"
_CLUSTER = rb'\{"clusterId":' + _S + rb'(?:,"probability":' + _N + rb')?(?:,"distance":' + _N + rb")?\}"
_WEIGHTS = rb"\[(?:" + _N + rb"(?:," + _N + rb")*+)?\]"
_RESULT = (
    rb'\{(?:"regression":'
    + _N
    + rb'|"classifications":\['
    + _CLASS
    + rb"(?:,"
    + _CLASS
    + rb")*+\]"
    + rb'|"clusters":\['
    + _CLUSTER
    + rb"(?:,"
    + _CLUSTER
    + rb")*+\]"
    + rb'|"(?:double|float)Weights":'
    + _WEIGHTS
    + rb")\}"
)
_ANSWER = re.compile(rb'\{"scoringResults":\[(?:' + _RESULT + rb"(?:," + _RESULT + rb")*+)?\]\}")


def check_answer(data: bytes) -> None:
    """A worker's score answer is `{"scoringResults": [...]}` of OML Services' result shapes, as our renderers
    write it, in UTF-8, and nothing else (a hostile model must not answer its callers anything else under our
    name); ModelFailed otherwise."""
    if _ANSWER.fullmatch(data) is None:
        raise ModelFailed("the model's answer is not OML Services' scoringResults")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFailed("the model's answer is not UTF-8") from None


class Scorer:
    """Loads models into their callers' workers and scores requests with them."""

    def __init__(self, workers: Workers[Any], limits: ScoringLimits | None = None) -> None:
        self.workers = workers
        self.limits = limits or ScoringLimits()
        self._seq = itertools.count(1)

    def inspect(self, model: ScoringModel, data: bytes) -> dict[str, Any]:
        """Load a model being stored in one of its owner's workers (which keeps it, warm for the owner's own
        calls) and return its checked description; ModelUnreadable when it is no model of its type."""
        worker = self.workers.acquire(model.key(model.owner), 1, self.limits.worker_wait_s)[0]
        healthy = False
        try:
            description = self._load(worker, model, data)
            healthy = True
            return description
        finally:
            self.workers.release(worker, healthy and not worker.killed)

    def score(
        self,
        model: ScoringModel,
        caller: str,
        body: bytes,
        fetch: Callable[[], bytes],
        images: list[bytes] | None = None,
    ) -> bytes:
        """`{"scoringResults": [...]}` for an OML Services score body (or uploaded images), as JSON bytes;
        `fetch` gives the model's bytes when the worker has not loaded them yet."""
        worker = self.workers.acquire(model.key(caller), 1, self.limits.worker_wait_s)[0]
        healthy = False
        limit = self.limits.max_answer_bytes
        try:
            if getattr(worker, "model", None) != model.loaded:
                try:
                    self._load(worker, model, fetch())
                except ModelUnreadable as e:
                    raise ModelFailed(f"the stored model cannot be loaded: {e}") from None
            seq = next(self._seq)
            try:
                out, failure, error = worker.exchange(
                    lambda ch, deadline: wire.send_score(
                        ch, seq, model.kind, model.digest, body, images, limit, deadline
                    ),
                    lambda header, blobs: wire.read_scored(header, blobs, seq),
                    self.limits.score_time_limit_s,
                )
            except WorkerTimedOut:
                worker.kill()
                raise TimeLimitExceeded(self.limits.score_time_limit_s) from None
            except WorkerDied as e:
                raise WorkerCrashed(f"The model's worker process stopped while scoring: {e}") from None
            healthy = True
        finally:
            self.workers.release(worker, healthy and not worker.killed)
        if failure == "input":
            raise ScoreRejected(error or "the request does not fit the model")
        if failure == "size" or len(out) > limit:
            raise OutputTooLarge(limit)
        if failure is not None:
            raise ModelFailed(error or "the model failed")
        check_answer(out)
        return out

    def _load(self, worker: ModelWorker, model: ScoringModel, data: bytes) -> dict[str, Any]:
        worker.model = None
        seq = next(self._seq)
        try:
            metadata, error = worker.exchange(
                lambda ch, deadline: wire.send_model(ch, seq, model.kind, model.digest, data, deadline),
                lambda header, blobs: wire.read_model_info(header, blobs, seq),
                self.limits.load_time_limit_s,
            )
        except WorkerTimedOut:
            worker.kill()
            raise ModelUnreadable(
                f"the model took longer than {self.limits.load_time_limit_s:g} s to load and was stopped"
            ) from None
        except WorkerDied as e:
            raise ModelUnreadable(f"loading the model stopped its worker process: {e}") from None
        if metadata is None:
            raise ModelUnreadable(error or "the model cannot be loaded")
        try:
            description = check_description(metadata)
        except ModelUnreadable:
            worker.kill("described a model in a way that breaks the rules")
            raise
        worker.model = model.loaded
        return description
