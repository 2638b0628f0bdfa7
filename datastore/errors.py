"""Datastore errors.

DatastoreError
├── DatastoreNotFound(name, owner)    no such datastore, or the caller may not read it
├── ObjectNotFound(name, objects)     load/delete of objects the datastore does not hold
├── ObjectChanged(name, obj)          the object was replaced while it was being loaded (load again)
├── DatastoreExists(name)             save without overwrite/append over an existing datastore
├── InvalidDatastoreRequest(detail)   contradictory or malformed save/delete arguments
├── InvalidDatastoreName(name)        a datastore or object name that breaks the naming rules
├── NotGrantable(name)                grant on a datastore saved with grantable=False
└── DatastoreTooLarge(size, limit)    the datastore would exceed the configured size limit
"""

from __future__ import annotations


class DatastoreError(Exception):
    """Base of the datastore errors."""


class DatastoreNotFound(DatastoreError):
    def __init__(self, name: str, owner: str | None = None) -> None:
        self.name, self.owner = name, owner
        where = f" owned by {owner}" if owner else ""
        super().__init__(f"Datastore {name}{where} does not exist or is not accessible")


class ObjectNotFound(DatastoreError):
    def __init__(self, name: str, objects: list[str]) -> None:
        self.name, self.objects = name, objects
        super().__init__(f"Datastore {name} has no object(s) named {', '.join(objects)}")


class ObjectChanged(DatastoreError):
    def __init__(self, name: str, obj: str) -> None:
        self.name, self.obj = name, obj
        super().__init__(f"Object {obj} of datastore {name} was replaced during the load; load again")


class DatastoreExists(DatastoreError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Datastore {name} already exists; use overwrite=True or append=True")


class InvalidDatastoreRequest(DatastoreError):
    pass


class InvalidDatastoreName(DatastoreError):
    def __init__(self, name: str, what: str = "datastore") -> None:
        self.name = name
        super().__init__(
            f"Invalid {what} name {name!r}: use a letter or _, then letters, digits, _, . or - (at most 128)"
        )


class NotGrantable(DatastoreError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Datastore {name} was not saved as grantable")


class DatastoreTooLarge(DatastoreError):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"The datastore would hold {size} bytes, more than the limit of {limit} bytes")
