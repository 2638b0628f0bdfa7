"""Datastore operations: plain values in, plain values out. Pickled bytes are never unpickled here."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datastore.errors import (
    DatastoreExists,
    DatastoreNotFound,
    DatastoreTooLarge,
    InvalidDatastoreName,
    InvalidDatastoreRequest,
    NotGrantable,
    ObjectChanged,
    ObjectNotFound,
)
from datastore.models import Datastore, DatastoreGeneration, DatastoreGrant, DatastoreObject

#: Grantee meaning every user.
PUBLIC = "PUBLIC"
#: Datastore and object names.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
DS_TYPES: tuple[str, ...] = ("user", "all", "grant", "granted", "grantable", "private")
DatastoreType = Literal["user", "all", "grant", "granted", "grantable", "private"]


@dataclass(frozen=True)
class ObjectIn:
    """An object to save: its pickled bytes (or a file holding them, read only when stored) and the facts
    `describe` reports."""

    name: str
    data: bytes | IO[bytes]
    class_name: str
    length: int | None = None
    row_count: int | None = None
    col_count: int | None = None

    @property
    def size(self) -> int:
        if isinstance(self.data, bytes):
            return len(self.data)
        self.data.seek(0, io.SEEK_END)
        return self.data.tell()

    def read(self) -> bytes:
        if isinstance(self.data, bytes):
            return self.data
        self.data.seek(0)
        return self.data.read()


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    class_name: str
    size: int
    length: int | None
    row_count: int | None
    col_count: int | None
    digest: str


@dataclass(frozen=True)
class DatastoreInfo:
    owner: str
    name: str
    description: str | None
    grantable: bool
    object_count: int
    size: int
    created_at: datetime
    updated_at: datetime
    #: Set in `grant` listings.
    grantee: str | None = None


def generation(session: Session) -> int:
    """The datastore generation: it changes whenever any datastore, object or grant changes."""
    return int(session.scalar(select(DatastoreGeneration.value).where(DatastoreGeneration.id == 1)) or 0)


def _changed(session: Session) -> None:
    """Raise the generation in the caller's transaction (the row is made on first use)."""
    result = session.execute(
        update(DatastoreGeneration).where(DatastoreGeneration.id == 1).values(value=DatastoreGeneration.value + 1)
    )
    if getattr(result, "rowcount", 0) == 0:
        session.add(DatastoreGeneration(id=1, value=1))
    session.flush()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_name(name: str, what: str = "datastore") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidDatastoreName(str(name), what)
    return name


def _object_info(o: DatastoreObject) -> ObjectInfo:
    return ObjectInfo(o.name, o.class_name, o.size, o.length, o.row_count, o.col_count, o.digest)


def _stats(session: Session, ds_id: int) -> tuple[int, int]:
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(DatastoreObject.size), 0)).where(
            DatastoreObject.datastore_id == ds_id
        )
    ).one()
    return int(count), int(size)


def _info(session: Session, ds: Datastore, grantee: str | None = None) -> DatastoreInfo:
    count, size = _stats(session, ds.id)
    return DatastoreInfo(
        ds.owner, ds.name, ds.description, ds.grantable, count, size, ds.created_at, ds.updated_at, grantee
    )


def _own(session: Session, caller: str, name: str, *, lock: bool = False) -> Datastore | None:
    q = select(Datastore).where(Datastore.owner == caller, Datastore.name == name)
    return session.scalar(q.with_for_update() if lock else q)


def save(
    session: Session,
    caller: str,
    name: str,
    objects: list[ObjectIn],
    *,
    description: str | None = None,
    grantable: bool | None = None,
    overwrite: bool = False,
    append: bool = False,
    max_bytes: int,
) -> DatastoreInfo:
    """Create, overwrite or append to a datastore in the caller's transaction (all or nothing)."""
    check_name(name)
    if overwrite and append:
        raise InvalidDatastoreRequest("overwrite and append are mutually exclusive")
    if not objects:
        raise InvalidDatastoreRequest("objs must hold at least one object")
    names = [check_name(o.name, "object") for o in objects]
    if len(set(names)) != len(names):
        raise InvalidDatastoreRequest("object names must be unique")
    ds = _own(session, caller, name, lock=True)
    now = _now()
    kept_size = 0
    if ds is None:
        ds = Datastore(
            owner=caller, name=name, description=description, grantable=bool(grantable), created_at=now, updated_at=now
        )
        session.add(ds)
        session.flush()
    elif append:
        # Objects with the same name are replaced; the description is kept (as in OML).
        session.execute(
            delete(DatastoreObject).where(DatastoreObject.datastore_id == ds.id, DatastoreObject.name.in_(names))
        )
        kept_size = _stats(session, ds.id)[1]
        if grantable is not None:
            ds.grantable = grantable
        ds.updated_at = now
    elif overwrite:
        session.execute(delete(DatastoreObject).where(DatastoreObject.datastore_id == ds.id))
        ds.description, ds.grantable, ds.updated_at = description, bool(grantable), now
    else:
        raise DatastoreExists(name)
    total = kept_size + sum(o.size for o in objects)
    if total > max_bytes:
        raise DatastoreTooLarge(total, max_bytes)
    if not ds.grantable:
        session.execute(delete(DatastoreGrant).where(DatastoreGrant.datastore_id == ds.id))
    for o in objects:  # one object in memory at a time: stored, then forgotten by the session
        data = o.read()
        row = DatastoreObject(
            datastore_id=ds.id,
            name=o.name,
            class_name=o.class_name[:255],
            size=len(data),
            length=o.length,
            row_count=o.row_count,
            col_count=o.col_count,
            digest=hashlib.sha256(data).hexdigest(),
            data=data,
        )
        session.add(row)
        session.flush()
        session.expunge(row)
        del data, row
    _changed(session)
    return _info(session, ds)


def _readable(caller: str):  # noqa: ANN202 - SQLAlchemy expression
    granted = select(DatastoreGrant.datastore_id).where(DatastoreGrant.grantee.in_((caller, PUBLIC)))
    return or_(Datastore.owner == caller, Datastore.id.in_(granted))


def _find(session: Session, caller: str, name: str, owner: str | None) -> Datastore:
    check_name(name)
    owner = (owner or caller).upper()
    ds = session.scalar(select(Datastore).where(Datastore.owner == owner, Datastore.name == name, _readable(caller)))
    if ds is None:
        raise DatastoreNotFound(name, None if owner == caller else owner)
    return ds


def describe(
    session: Session, caller: str, name: str, owner: str | None = None
) -> tuple[DatastoreInfo, list[ObjectInfo]]:
    """The datastore and its objects, if the caller may read it."""
    ds = _find(session, caller, name, owner)
    objs = session.scalars(
        select(DatastoreObject).where(DatastoreObject.datastore_id == ds.id).order_by(DatastoreObject.name)
    )
    return _info(session, ds), [_object_info(o) for o in objs]


def load_object(
    session: Session, caller: str, name: str, obj: str, owner: str | None = None, digest: str | None = None
) -> tuple[ObjectInfo, bytes]:
    """One object's pickled bytes; with `digest`, only if the object is still that version (ObjectChanged)."""
    ds = _find(session, caller, name, owner)
    o = session.scalar(
        select(DatastoreObject).where(DatastoreObject.datastore_id == ds.id, DatastoreObject.name == obj)
    )
    if o is None:
        raise ObjectNotFound(name, [obj])
    if digest is not None and digest != o.digest:
        raise ObjectChanged(name, obj)
    return _object_info(o), o.data


def list_datastores(session: Session, caller: str, dstype: DatastoreType = "user") -> list[DatastoreInfo]:
    """Datastores of one listing type (OML's `user`, `all`, `grant`, `granted`, `grantable`, `private`)."""
    if dstype == "grant":
        rows = session.execute(
            select(Datastore, DatastoreGrant.grantee)
            .join(DatastoreGrant, DatastoreGrant.datastore_id == Datastore.id)
            .where(Datastore.owner == caller)
            .order_by(Datastore.name, DatastoreGrant.grantee)
        )
        return [_info(session, ds, g) for ds, g in rows]
    q = select(Datastore)
    if dstype == "all":
        q = q.where(_readable(caller))
    elif dstype == "granted":
        q = q.where(Datastore.owner != caller, _readable(caller))
    else:
        q = q.where(Datastore.owner == caller)
        if dstype == "grantable":
            q = q.where(Datastore.grantable.is_(True))
        elif dstype == "private":
            q = q.where(Datastore.grantable.is_(False))
    return [_info(session, ds) for ds in session.scalars(q.order_by(Datastore.owner, Datastore.name))]


def delete_datastore(session: Session, caller: str, name: str, objs: list[str] | None = None) -> list[str]:
    """Delete the caller's datastore, or only the named objects of it; returns the names deleted."""
    check_name(name)
    ds = _own(session, caller, name, lock=True)
    if ds is None:
        raise DatastoreNotFound(name)
    if objs is None:
        session.execute(delete(DatastoreGrant).where(DatastoreGrant.datastore_id == ds.id))
        session.execute(delete(DatastoreObject).where(DatastoreObject.datastore_id == ds.id))
        session.delete(ds)
        _changed(session)
        return [name]
    # As in OML, naming objects the datastore does not hold is not an error.
    wanted = [check_name(o, "object") for o in objs]
    present = sorted(
        set(
            session.scalars(
                select(DatastoreObject.name).where(
                    DatastoreObject.datastore_id == ds.id, DatastoreObject.name.in_(wanted)
                )
            )
        )
    )
    if present:
        session.execute(
            delete(DatastoreObject).where(DatastoreObject.datastore_id == ds.id, DatastoreObject.name.in_(present))
        )
        ds.updated_at = _now()
        _changed(session)
    return present


def grant(session: Session, caller: str, name: str, grantee: str | None) -> None:
    """Let `grantee` (None = PUBLIC) read the caller's datastore; only for grantable datastores."""
    check_name(name)
    ds = _own(session, caller, name)
    if ds is None:
        raise DatastoreNotFound(name)
    if not ds.grantable:
        raise NotGrantable(name)
    grantee = (grantee or PUBLIC).upper()
    if session.get(DatastoreGrant, (ds.id, grantee)) is None:
        try:  # a concurrent identical grant may win the race: that is the same outcome
            with session.begin_nested():
                session.add(DatastoreGrant(datastore_id=ds.id, grantee=grantee))
        except IntegrityError:
            pass
    _changed(session)


def revoke(session: Session, caller: str, name: str, grantee: str | None) -> None:
    check_name(name)
    ds = _own(session, caller, name)
    if ds is None:
        raise DatastoreNotFound(name)
    grantee = (grantee or PUBLIC).upper()
    session.execute(
        delete(DatastoreGrant).where(DatastoreGrant.datastore_id == ds.id, DatastoreGrant.grantee == grantee)
    )
    _changed(session)


def drop_owner(session: Session, owner: str) -> None:
    """Forget a removed user: their datastores and every grant to them."""
    ids = session.scalars(select(Datastore.id).where(Datastore.owner == owner)).all()
    session.execute(
        delete(DatastoreGrant).where(or_(DatastoreGrant.datastore_id.in_(ids), DatastoreGrant.grantee == owner))
    )
    session.execute(delete(DatastoreObject).where(DatastoreObject.datastore_id.in_(ids)))
    session.execute(delete(Datastore).where(Datastore.id.in_(ids)))
    _changed(session)
