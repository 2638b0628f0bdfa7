"""Script repository operations: plain values in, plain values out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from repository.errors import AdminRequired, InvalidScriptName, ScriptExists, ScriptNotFound
from repository.models import Script, ScriptGrant
from repository.source import entry_function

#: Owner shown for global scripts.
GLOBAL_OWNER = "PYQSYS"
#: Grantee meaning every user.
PUBLIC = "PUBLIC"
#: Script names: safe in URLs and file names.
SCRIPT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")

ScriptType = Literal["user", "all", "global", "grant", "granted"]
SCRIPT_TYPES: tuple[str, ...] = ("user", "all", "global", "grant", "granted")


@dataclass(frozen=True)
class ScriptInfo:
    owner: str
    name: str
    source: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    created_by: str
    #: Set in `grant` listings: who the script was granted to.
    grantee: str | None = None

    @property
    def is_global(self) -> bool:
        return self.owner == GLOBAL_OWNER


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _info(s: Script, grantee: str | None = None) -> ScriptInfo:
    return ScriptInfo(s.owner, s.name, s.source, s.description, s.created_at, s.updated_at, s.created_by, grantee)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not SCRIPT_NAME_RE.fullmatch(name):
        raise InvalidScriptName(str(name))
    return name


def create_script(
    session: Session,
    caller: str,
    name: str,
    source: str,
    *,
    is_global: bool = False,
    overwrite: bool = False,
    description: str | None = None,
    is_admin: bool = False,
) -> ScriptInfo:
    """Store a function; checks that the source compiles and defines a function. Only administrators create or
    replace global scripts: whoever runs one hands it their identity."""
    check_name(name)
    if is_global and not is_admin:
        raise AdminRequired(name)
    entry_function(name, source)
    owner = GLOBAL_OWNER if is_global else caller
    now = _now()
    existing = _exact(session, owner, name)
    if existing is None:
        script = Script(
            owner=owner,
            name=name,
            source=source,
            description=description,
            created_by=caller,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(script)
            return _info(script)
        except IntegrityError:
            # A concurrent create of the same name committed first (PostgreSQL; SQLite writers queue):
            # treat it as if it had been there all along.
            existing = _exact(session, owner, name)
            if existing is None:
                raise
    if not overwrite:
        raise ScriptExists(name, owner)
    existing.source, existing.description, existing.updated_at = source, description, now
    session.flush()
    return _info(existing)


def _exact(session: Session, owner: str, name: str) -> Script | None:
    return session.scalar(select(Script).where(Script.owner == owner, Script.name == name))


def _readable(caller: str):  # noqa: ANN202 - SQLAlchemy expression
    granted = select(ScriptGrant.script_id).where(ScriptGrant.grantee.in_((caller, PUBLIC)))
    return or_(Script.owner == caller, Script.owner == GLOBAL_OWNER, Script.id.in_(granted))


def get_script(session: Session, caller: str, name: str, owner: str | None = None) -> ScriptInfo:
    """Resolve a script as OML does: own first, then global; or `owner`'s if the caller may read it."""
    check_name(name)
    if owner is None:
        for candidate in (caller, GLOBAL_OWNER):
            s = session.scalar(select(Script).where(Script.owner == candidate, Script.name == name))
            if s is not None:
                return _info(s)
        raise ScriptNotFound(name)
    owner = owner.upper()
    s = session.scalar(select(Script).where(Script.owner == owner, Script.name == name, _readable(caller)))
    if s is None:
        raise ScriptNotFound(name, owner)
    return _info(s)


def drop_script(session: Session, caller: str, name: str, *, is_global: bool = False, is_admin: bool = False) -> None:
    check_name(name)
    if is_global and not is_admin:
        raise AdminRequired(name)
    owner = GLOBAL_OWNER if is_global else caller
    s = session.scalar(select(Script).where(Script.owner == owner, Script.name == name))
    if s is None:
        raise ScriptNotFound(name, owner)
    session.delete(s)
    session.flush()


def list_scripts(session: Session, caller: str, sctype: ScriptType = "all") -> list[ScriptInfo]:
    """Scripts of one listing type (OML's `user`, `all`, `global`, `grant`, `granted`)."""
    if sctype == "grant":
        rows = session.execute(
            select(Script, ScriptGrant.grantee)
            .join(ScriptGrant, ScriptGrant.script_id == Script.id)
            .where(Script.owner == caller)
            .order_by(Script.name, ScriptGrant.grantee)
        )
        return [_info(s, g) for s, g in rows]
    q = select(Script)
    if sctype == "user":
        q = q.where(Script.owner == caller)
    elif sctype == "global":
        q = q.where(Script.owner == GLOBAL_OWNER)
    elif sctype == "granted":
        granted = select(ScriptGrant.script_id).where(ScriptGrant.grantee.in_((caller, PUBLIC)))
        q = q.where(Script.owner.not_in((caller, GLOBAL_OWNER)), Script.id.in_(granted))
    else:
        q = q.where(_readable(caller))
    return [_info(s) for s in session.scalars(q.order_by(Script.owner, Script.name))]


def _own_private(session: Session, caller: str, name: str) -> Script:
    check_name(name)
    s = session.scalar(select(Script).where(Script.owner == caller, Script.name == name))
    if s is None:
        raise ScriptNotFound(name, caller)
    return s


def grant(session: Session, caller: str, name: str, grantee: str | None) -> None:
    """Let `grantee` (None = PUBLIC) read and run the caller's private script."""
    s = _own_private(session, caller, name)
    grantee = (grantee or PUBLIC).upper()
    if session.get(ScriptGrant, (s.id, grantee)) is None:
        try:  # a concurrent identical grant may win the race: that is the same outcome
            with session.begin_nested():
                session.add(ScriptGrant(script_id=s.id, grantee=grantee))
        except IntegrityError:
            pass


def revoke(session: Session, caller: str, name: str, grantee: str | None) -> None:
    s = _own_private(session, caller, name)
    grantee = (grantee or PUBLIC).upper()
    session.execute(delete(ScriptGrant).where(ScriptGrant.script_id == s.id, ScriptGrant.grantee == grantee))
    session.flush()


def drop_owner(session: Session, owner: str, *, reassign_globals_to: str | None = None) -> None:
    """Forget a removed user: their private scripts and grants to them; their global scripts stay."""
    ids: Iterable[int] = session.scalars(select(Script.id).where(Script.owner == owner)).all()
    session.execute(delete(ScriptGrant).where(or_(ScriptGrant.script_id.in_(ids), ScriptGrant.grantee == owner)))
    session.execute(delete(Script).where(Script.owner == owner))
    if reassign_globals_to:
        for s in session.scalars(select(Script).where(Script.owner == GLOBAL_OWNER, Script.created_by == owner)):
            s.created_by = reassign_globals_to
    session.flush()
