"""OML Services between the routes and the packages: storing a model (read first by a sandboxed worker of its
owner), and scoring a deployment (looked up once, cached until a change; the model's bytes fetched only when a
worker has not loaded them)."""

from __future__ import annotations

from engines.scoring import Scorer, ScoringLimits, ScoringModel
from models import service as models_service
from models.errors import DeploymentNotFound, InvalidModelRequest, ModelExists, ModelTooLarge
from models.service import DeploymentInfo, ModelInfo, NewModel
from server.db import write_session
from server.services import Services


def open_scorer(services: Services) -> Scorer:
    s = services.settings
    assert services.pool is not None
    return Scorer(
        services.pool,
        ScoringLimits(
            score_time_limit_s=s.score_time_limit_s,
            load_time_limit_s=s.model_load_time_limit_s,
            worker_wait_s=s.worker_wait_s,
            max_answer_bytes=s.output_max_bytes,
        ),
    )


def _scorer(services: Services) -> Scorer:
    if services.scorer is None:  # pragma: no cover - set by the app's lifespan
        raise RuntimeError("the scorer is not running")
    return services.scorer


def store_model(services: Services, owner: str, new: NewModel, data: bytes) -> ModelInfo:
    """Check the fields, have one of the owner's workers read the model (ModelUnreadable when it is none), then
    store it with what the worker found."""
    models_service.check_new(new)
    limit = services.settings.model_max_bytes
    if len(data) > limit:
        raise ModelTooLarge(len(data), limit)
    if not data:
        raise InvalidModelRequest("modelData is empty")
    with services.sessions() as session:  # a name clash is refused before the model is read
        if models_service.exists(session, owner, new):
            raise ModelExists(new.name, new.version, new.namespace)
    digest = models_service.digest_of(data)
    metadata = _scorer(services).inspect(ScoringModel(owner, new.model_type, digest), data)
    with write_session(services.sessions) as session:
        return models_service.store(session, owner, new, data, metadata)


def endpoint(services: Services, user: str, uri: str) -> DeploymentInfo:
    """The deployment at `uri` if `user` may score it (DeploymentNotFound otherwise), from the cache."""

    def load() -> DeploymentInfo | bool:
        with services.sessions() as session:
            return models_service.find_deployment(session, uri) or False

    found = services.deployment_cache.get_or_load(uri, load)
    if not found or not isinstance(found, DeploymentInfo) or not found.visible_to(user):
        raise DeploymentNotFound(uri[:200])
    return found


def score(services: Services, user: str, uri: str, body: bytes, images: list[bytes] | None = None) -> bytes:
    """Score a request with the deployment at `uri`: `{"scoringResults": [...]}` as JSON bytes."""
    target = endpoint(services, user, uri)
    model = target.model

    def fetch() -> bytes:
        with services.sessions() as session:
            return models_service.data_of(session, model.id, model.digest)

    target_model = ScoringModel(model.owner, model.model_type, model.digest)
    return _scorer(services).score(target_model, user, body, fetch, images)
