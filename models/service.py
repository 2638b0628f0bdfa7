"""Model repository operations: plain values in, plain values out. Model bytes are stored and handed out as
bytes; reading them (unzipping, parsing ONNX, unpickling) is a sandboxed worker's job, never this package's.

Who may do what (Oracle's rules, docs/compatibility.md): a caller sees its own models and shared ones (anything
else is "not found"); only the creator changes or deletes a model; the creator deploys it, and so may anyone
for a shared model; an endpoint is visible to, and may be scored by, whoever may see its model; the model's
creator or the endpoint's creator removes it."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.errors import (
    AlreadyDeployed,
    DeploymentNotFound,
    InvalidModelRequest,
    ModelDeployed,
    ModelExists,
    ModelNotFound,
    NotModelOwner,
    UnsupportedModelType,
    UriTaken,
)
from models.models import Deployment, StoredModel

#: Oracle's patterns (reference/oml-services-openapi.json).
NAME_RE = re.compile(r"[A-Za-z0-9_]{1,50}")
VERSION_RE = re.compile(r"[1-9]?[0-9](\.[0-9][0-9]?)?")
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_]{0,50}")
URI_RE = re.compile(r"[A-Za-z0-9_]{1,200}")
MODEL_ID_RE = re.compile(r"[a-z0-9-]{32,36}")
MAX_DESCRIPTION = 4000

#: Model types pyqd stores and scores. PYTHON is pyqd's own: a pickled or joblib estimator.
MODEL_TYPES = ("ONNX", "ONNX_IMG", "PYTHON")
#: Oracle's in-database models: they need Oracle's database to score.
OML_TYPE = "OML"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owner: str
    name: str
    version: str
    namespace: str
    model_type: str
    description: str | None
    shared: bool
    stored_on: datetime
    size: int
    digest: str
    metadata: dict[str, Any]

    def visible_to(self, user: str) -> bool:
        return self.shared or self.owner == user


@dataclass(frozen=True)
class DeploymentInfo:
    uri: str
    deployed_by: str
    deployed_on: datetime
    model: ModelInfo

    def visible_to(self, user: str) -> bool:
        return self.model.visible_to(user) or self.deployed_by == user


@dataclass(frozen=True)
class NewModel:
    """What a store names: checked by `check_new`."""

    name: str
    version: str
    model_type: str
    namespace: str = ""
    description: str | None = None
    shared: bool = False


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_new(m: NewModel) -> NewModel:
    """The model's fields, or InvalidModelRequest / UnsupportedModelType naming the first that breaks the rules."""
    if m.model_type == OML_TYPE:
        raise UnsupportedModelType(
            OML_TYPE,
            "modelType OML is an Oracle in-database model, which only Oracle's database can score; export it "
            "to ONNX, or store the fitted estimator as PYTHON",
        )
    if m.model_type not in MODEL_TYPES:
        raise UnsupportedModelType(str(m.model_type), f"modelType must be one of {', '.join(MODEL_TYPES)}")
    _check("modelName", m.name, NAME_RE, "1 to 50 letters, digits or _")
    _check("version", m.version, VERSION_RE, "like 1.0 (up to two digits, a dot, up to two digits)")
    _check("namespace", m.namespace, NAMESPACE_RE, "up to 50 letters, digits or _")
    if m.description is not None and len(m.description) > MAX_DESCRIPTION:
        raise InvalidModelRequest(f"description is longer than {MAX_DESCRIPTION} characters")
    return m


def check_uri(uri: str) -> str:
    return _check("uri", uri, URI_RE, "1 to 200 letters, digits or _")


def _check(field: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidModelRequest(f"{field} {str(value)[:80]!r} is invalid: {rule}")
    return value


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info(m: StoredModel) -> ModelInfo:
    return ModelInfo(
        m.id,
        m.owner,
        m.name,
        m.version,
        m.namespace,
        m.model_type,
        m.description,
        m.shared,
        m.stored_on,
        m.size,
        m.digest,
        json.loads(m.metadata_json),
    )


def store(session: Session, owner: str, new: NewModel, data: bytes, metadata: dict[str, Any]) -> ModelInfo:
    """Store a checked model with the metadata a worker read from it; ModelExists when (name, version,
    namespace) is the owner's already."""
    row = StoredModel(
        id=str(uuid.uuid4()),
        owner=owner,
        name=new.name,
        version=new.version,
        namespace=new.namespace,
        model_type=new.model_type,
        description=new.description,
        shared=new.shared,
        stored_on=_now(),
        size=len(data),
        digest=digest_of(data),
        metadata_json=json.dumps(metadata),
        data=data,
    )
    if _find_same(session, owner, new) is not None:
        raise ModelExists(new.name, new.version, new.namespace)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ModelExists(new.name, new.version, new.namespace) from None
    return _info(row)


def exists(session: Session, owner: str, new: NewModel) -> bool:
    """Whether the owner has a model of that name, version and namespace."""
    return _find_same(session, owner, new) is not None


def _find_same(session: Session, owner: str, new: NewModel) -> StoredModel | None:
    return session.scalars(
        select(StoredModel).where(
            StoredModel.owner == owner,
            StoredModel.name == new.name,
            StoredModel.version == new.version,
            StoredModel.namespace == new.namespace,
        )
    ).first()


def _visible(user: str) -> Any:
    return or_(StoredModel.owner == user, StoredModel.shared.is_(True))


def list_models(
    session: Session, user: str, name: str | None = None, version: str | None = None, namespace: str | None = None
) -> list[ModelInfo]:
    q = _filtered(select(StoredModel).where(_visible(user)), name, version, namespace)
    return [_info(m) for m in session.scalars(q.order_by(StoredModel.stored_on, StoredModel.id))]


def _filtered(q: Any, name: str | None, version: str | None, namespace: str | None) -> Any:
    """Oracle's optional `modelName`, `version` and `namespace` filters."""
    for column, value in ((StoredModel.name, name), (StoredModel.version, version), (StoredModel.namespace, namespace)):
        if value is not None:
            q = q.where(column == value)
    return q


def _row(session: Session, user: str, model_id: str) -> StoredModel:
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        raise ModelNotFound(str(model_id)[:40])
    m = session.get(StoredModel, model_id)
    if m is None or not (m.shared or m.owner == user):
        raise ModelNotFound(model_id)
    return m


def get_model(session: Session, user: str, model_id: str) -> ModelInfo:
    return _info(_row(session, user, model_id))


def model_data(session: Session, user: str, model_id: str) -> bytes:
    return _row(session, user, model_id).data


def data_of(session: Session, model_id: str, digest: str) -> bytes:
    """The bytes of a model the caller was already allowed to use (by its deployment), checked against the
    digest it was deployed with: ModelNotFound once it is gone."""
    m = session.get(StoredModel, model_id)
    if m is None or m.digest != digest:
        raise ModelNotFound(model_id)
    return m.data


def _own_row(session: Session, user: str, model_id: str, what: str) -> StoredModel:
    m = _row(session, user, model_id)
    if m.owner != user:
        raise NotModelOwner(what)
    return m


def set_namespace(session: Session, user: str, model_id: str, namespace: str) -> None:
    _check("namespace", namespace, NAMESPACE_RE, "up to 50 letters, digits or _")
    m = _own_row(session, user, model_id, "change its namespace")
    clash = _find_same(session, user, NewModel(m.name, m.version, m.model_type, namespace))
    if clash is not None and clash.id != m.id:
        raise ModelExists(m.name, m.version, namespace)
    session.execute(update(StoredModel).where(StoredModel.id == m.id).values(namespace=namespace))


def delete_model(session: Session, user: str, model_id: str) -> None:
    m = _own_row(session, user, model_id, "delete it")
    uri = session.scalar(select(Deployment.uri).where(Deployment.model_id == m.id))
    if uri is not None:
        raise ModelDeployed(m.id, uri)
    session.execute(delete(StoredModel).where(StoredModel.id == m.id))


def deploy(session: Session, user: str, model_id: str, uri: str) -> DeploymentInfo:
    check_uri(uri)
    m = _row(session, user, model_id)
    # Oracle lets only the creator deploy; pyqd lets anyone deploy a shared model (docs/compatibility.md).
    existing = session.scalar(select(Deployment.uri).where(Deployment.model_id == m.id))
    if existing is not None:
        raise AlreadyDeployed(m.id, existing)
    if session.get(Deployment, uri) is not None:
        raise UriTaken(uri)
    row = Deployment(uri=uri, model_id=m.id, deployed_by=user, deployed_on=_now())
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise UriTaken(uri) from None
    return DeploymentInfo(row.uri, row.deployed_by, row.deployed_on, _info(m))


def _deployments(session: Session) -> Any:
    return select(Deployment, StoredModel).join(StoredModel, StoredModel.id == Deployment.model_id)


def list_deployments(
    session: Session, user: str, name: str | None = None, version: str | None = None, namespace: str | None = None
) -> list[DeploymentInfo]:
    q = _filtered(
        _deployments(session).where(or_(_visible(user), Deployment.deployed_by == user)), name, version, namespace
    )
    rows = session.execute(q.order_by(Deployment.deployed_on, Deployment.uri)).all()
    return [DeploymentInfo(d.uri, d.deployed_by, d.deployed_on, _info(m)) for d, m in rows]


def find_deployment(session: Session, uri: str) -> DeploymentInfo | None:
    """The endpoint at `uri`, whoever may see it (callers check `visible_to`)."""
    if not isinstance(uri, str) or not URI_RE.fullmatch(uri):
        return None
    row = session.execute(_deployments(session).where(Deployment.uri == uri)).first()
    if row is None:
        return None
    d, m = row
    return DeploymentInfo(d.uri, d.deployed_by, d.deployed_on, _info(m))


def get_deployment(session: Session, user: str, uri: str) -> DeploymentInfo:
    info = find_deployment(session, uri)
    if info is None or not info.visible_to(user):
        raise DeploymentNotFound(uri[:200] if isinstance(uri, str) else "?")
    return info


def undeploy(session: Session, user: str, uri: str) -> DeploymentInfo:
    info = get_deployment(session, user, uri)
    if user not in (info.model.owner, info.deployed_by):
        raise NotModelOwner("delete its endpoint")
    session.execute(delete(Deployment).where(Deployment.uri == info.uri))
    return info


def remove_user(session: Session, user: str) -> None:
    """Everything a user owns: their endpoints, endpoints of their models, their models."""
    ids = select(StoredModel.id).where(StoredModel.owner == user)
    session.execute(delete(Deployment).where(or_(Deployment.deployed_by == user, Deployment.model_id.in_(ids))))
    session.execute(delete(StoredModel).where(StoredModel.owner == user))
