"""Scoring deployed models (OML Services), the server's side: a model is loaded and run only in sandboxed
workers of its owner (`engines.worker.scoring`); the server hands them bytes and forwards their answers, and
never parses a model or unpickles anything.

A worker serves one model: workers are taken for the key (owner, model digest), so a deployment stays warm (its
model is loaded once per worker, when the worker first serves it) and a model never shares a process with
another user's code or with another model. A worker that crashes, breaks the channel's rules or runs past the
time limit is killed: that request fails, the next one gets a fresh worker that loads the model again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines import wire
from engines.errors import ModelFailed, ModelUnreadable, ScoreRejected, TimeLimitExceeded, WorkerCrashed
from engines.pool import WorkerDied, WorkerTimedOut
from engines.spec import WORKER_KEY_SEPARATOR
from engines.workers import Worker, Workers


@dataclass(frozen=True)
class ScoringModel:
    """What a worker needs to know of a stored model: whose it is, its type, and which bytes."""

    owner: str
    kind: str
    digest: str

    @property
    def key(self) -> str:
        return f"{self.owner}{WORKER_KEY_SEPARATOR}model:{self.digest}"


@dataclass(frozen=True)
class ScoringLimits:
    #: Seconds one score request may take in the worker.
    score_time_limit_s: float = 30.0
    #: Seconds a worker may take to load a model.
    load_time_limit_s: float = 300.0
    #: How long a request waits for a free worker.
    worker_wait_s: float = 30.0


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
        return ModelDescription.model_validate(json.loads(data)).model_dump(exclude_none=True)
    except (ValueError, ValidationError) as e:
        raise ModelUnreadable(f"the model's description does not follow the rules: {str(e)[:500]}") from None


class Scorer:
    """Loads models into their owners' workers and scores requests with them."""

    def __init__(self, workers: Workers[Any], limits: ScoringLimits | None = None) -> None:
        self.workers = workers
        self.limits = limits or ScoringLimits()

    def inspect(self, model: ScoringModel, data: bytes) -> dict[str, Any]:
        """Load a model being stored in one of its owner's workers (which keeps it, warm for a deployment) and
        return its checked description; ModelUnreadable when it is no model of its type."""
        worker = self.workers.acquire(model.key, 1, self.limits.worker_wait_s)[0]
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
        body: bytes,
        fetch: Callable[[], bytes],
        images: list[bytes] | None = None,
    ) -> bytes:
        """`{"scoringResults": [...]}` for an OML Services score body (or uploaded images), as JSON bytes;
        `fetch` gives the model's bytes when the worker has not loaded them yet."""
        worker = self.workers.acquire(model.key, 1, self.limits.worker_wait_s)[0]
        healthy = False
        try:
            if getattr(worker, "model", None) != model.digest:
                try:
                    self._load(worker, model, fetch())
                except ModelUnreadable as e:
                    raise ModelFailed(f"the stored model cannot be loaded: {e}") from None
            try:
                out, failure, error = worker.exchange(
                    lambda ch, deadline: wire.send_score(ch, model.digest, body, images, deadline),
                    wire.read_scored,
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
        if failure == "model":
            raise ModelFailed(error or "the model failed")
        return out

    def _load(self, worker: Worker, model: ScoringModel, data: bytes) -> dict[str, Any]:
        worker.model = None  # type: ignore[attr-defined]
        try:
            metadata, error = worker.exchange(
                lambda ch, deadline: wire.send_model(ch, model.kind, model.digest, data, deadline),
                wire.read_model_info,
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
        description = check_description(metadata)
        worker.model = model.digest  # type: ignore[attr-defined]
        return description
