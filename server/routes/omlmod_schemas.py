"""OML Services' schemas (reference/oml-services-openapi.json), for the OpenAPI documents only: handlers build
plain dicts (the score answer comes from the worker as bytes), these say what they look like."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelType = Literal["ONNX", "ONNX_IMG", "PYTHON", "OML"]


class Error(BaseModel):
    code: str = Field(description="The HTTP status, as text")
    message: str


class OMLResourceLink(BaseModel):
    href: str
    rel: str


class ApiVersion(BaseModel):
    version: str
    isLatest: bool
    lifecycle: Literal["active", "deprecated"]
    links: list[OMLResourceLink]


class ApiVersionCollection(BaseModel):
    items: list[ApiVersion]
    links: list[OMLResourceLink]


class ModelResponse(BaseModel):
    modelId: str = Field(pattern=r"[a-z0-9-]{32,36}")
    modelName: str
    version: str
    description: str | None = None
    namespace: str | None = None
    modelType: ModelType
    shared: bool
    createdBy: str
    storedOn: datetime
    links: list[OMLResourceLink]


class ModelResponseCollection(BaseModel):
    items: list[ModelResponse]
    links: list[OMLResourceLink]


class CreateModelResponse(BaseModel):
    modelId: str
    links: list[OMLResourceLink]


class UpdateNamespaceParam(BaseModel):
    namespace: str = Field(description="Model namespace", pattern=r"^[a-zA-Z0-9_]{0,50}$")


class DatastoreModelParam(BaseModel):
    """pyqd extension: store a fitted estimator kept in a datastore as a PYTHON model."""

    model_config = ConfigDict(extra="forbid")
    modelName: str
    version: str
    modelType: Literal["PYTHON"] = "PYTHON"
    datastore: str = Field(description="A datastore of the caller's, or one granted to it (see owner)")
    object: str = Field(description="The object in it: a pickled estimator")
    owner: str | None = Field(default=None, description="The datastore's owner, when it is not the caller's")
    description: str | None = Field(default=None, max_length=4000)
    shared: bool | str | None = None
    namespace: str | None = None


class MetadataAttribute(BaseModel):
    name: str
    attributeType: str
    shape: list[int] | None = None


class ModelMetadata(BaseModel):
    modelName: str
    miningFunction: Literal["CLASSIFICATION", "REGRESSION", "CLUSTERING", "FEATURE_EXTRACTION"]
    algorithm: str
    attributes: list[MetadataAttribute]
    outputs: list[MetadataAttribute] | None = None
    labels: list[str] | None = None


class EndpointParam(BaseModel):
    uri: str = Field(pattern=r"^[a-zA-Z0-9_]{1,200}$")
    modelId: str = Field(pattern=r"^[a-z0-9-]{32,36}$")


class CreatedEndpoint(BaseModel):
    modelId: str
    deployedOn: datetime
    uri: str
    links: list[OMLResourceLink]


class DeploymentEndpoint(CreatedEndpoint):
    modelName: str
    description: str | None = None
    version: str
    modelType: ModelType
    createdBy: str
    namespace: str | None = None
    shared: bool
    deployedBy: str | None = Field(default=None, description="pyqd extension: who created the endpoint")


class DeploymentEndpointCollection(BaseModel):
    items: list[DeploymentEndpoint]
    links: list[OMLResourceLink]


class EndpointWithDetails(DeploymentEndpoint):
    metadata: ModelMetadata


class ScoreParam(BaseModel):
    inputRecords: list[dict[str, Any]] = Field(
        description="One record per row: attribute name → value (a number, or text holding one; absent or null "
        "is missing). Oracle's tensor form is accepted too: the input's tensor with its batch dimension."
    )
    topN: int | None = Field(default=None, ge=0, description="Most classes or clusters per row (0: all)")
    topNdetails: int | None = Field(default=None, ge=0, description="Prediction details: OML models only (0 or absent)")


class Classification(BaseModel):
    label: str
    probability: float


class Cluster(BaseModel):
    clusterId: str
    probability: float
    distance: float | None = Field(default=None, description="pyqd extension: distance to the centre")


class ScoringResult(BaseModel):
    classifications: list[Classification] | None = None
    regression: float | None = None
    clusters: list[Cluster] | None = None
    doubleWeights: list[float | None] | None = None


class ScoringOutputResultSet(BaseModel):
    scoringResults: list[ScoringResult]


def created(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A 201 answer with its body and a Location header."""
    return {
        "model": model,
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}, "description": "The new resource's URL"}},
    }


#: The error answers every operation documents.
def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Bad request",
        401: "Unauthorized",
        403: "Not allowed for the caller",
        404: "Resource not found",
        409: "Conflict",
        413: "Too large",
        429: "Too many requests",
        500: "Unexpected error",
        503: "Busy: retry later",
    }
    return {c: {"model": Error, "description": text[c]} for c in codes}
