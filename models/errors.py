"""Model repository errors.

ModelsError
├── InvalidModelRequest(detail)      a field breaks the rules (name, version, namespace, uri, type)
│   └── UnsupportedModelType(kind)   OML (in-database) models, or a type pyqd does not know
├── ModelNotFound(model_id)          no such model, or the caller may not see it (never tells which)
├── DeploymentNotFound(uri)          no such endpoint, or the caller may not see it
├── ModelExists(name, version)       a model of that name, version and namespace is stored already
├── ModelDeployed(model_id)          delete of a model that has an endpoint
├── AlreadyDeployed(model_id)        a second endpoint for one model
├── UriTaken(uri)                    an endpoint with that uri exists
├── NotModelOwner(model_id)          change, delete or undeploy by someone who may only see the model
└── ModelTooLarge(size, limit)       model bytes over the configured limit
"""

from __future__ import annotations


class ModelsError(Exception):
    """Base of the model repository errors."""


class InvalidModelRequest(ModelsError):
    pass


class UnsupportedModelType(InvalidModelRequest):
    def __init__(self, kind: str, why: str) -> None:
        self.kind = kind
        super().__init__(why)


class ModelNotFound(ModelsError):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        super().__init__(f"Model {model_id} does not exist or is not accessible")


class DeploymentNotFound(ModelsError):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"Endpoint {uri} does not exist or is not accessible")


class ModelExists(ModelsError):
    def __init__(self, name: str, version: str, namespace: str) -> None:
        where = f" in namespace {namespace}" if namespace else ""
        super().__init__(f"Model {name} version {version}{where} already exists")


class ModelDeployed(ModelsError):
    def __init__(self, model_id: str, uri: str) -> None:
        super().__init__(f"Model {model_id} is deployed at {uri}; delete the endpoint first")


class AlreadyDeployed(ModelsError):
    def __init__(self, model_id: str, uri: str) -> None:
        super().__init__(f"Model {model_id} is already deployed at {uri}")


class UriTaken(ModelsError):
    def __init__(self, uri: str) -> None:
        super().__init__(f"The uri {uri} is in use by another endpoint")


class NotModelOwner(ModelsError):
    def __init__(self, what: str) -> None:
        super().__init__(f"Only the creator of the model may {what}")


class ModelTooLarge(ModelsError):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"The model is {size} bytes; the limit is {limit} bytes")
