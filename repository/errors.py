"""Script repository errors.

RepositoryError
├── ScriptNotFound(name, owner)   no such script, or the caller may not see it (never tells which)
├── ScriptExists(name, owner)     create without overwrite over an existing script
├── InvalidScript(name, detail)   source that does not compile or defines no function
├── InvalidScriptName(name)       a name that breaks the naming rules
└── NotScriptOwner(name)          drop/overwrite/grant of a script the caller did not create
    └── AdminRequired(name)       create/replace/drop of a global script by a non-administrator
"""

from __future__ import annotations


class RepositoryError(Exception):
    """Base of the script repository errors."""


class ScriptNotFound(RepositoryError):
    def __init__(self, name: str, owner: str | None = None) -> None:
        self.name, self.owner = name, owner
        where = f" owned by {owner}" if owner else ""
        super().__init__(f"Script {name}{where} does not exist or is not accessible")


class ScriptExists(RepositoryError):
    def __init__(self, name: str, owner: str) -> None:
        self.name, self.owner = name, owner
        super().__init__(f"Script {name} already exists for {owner}; use overwrite to replace it")


class InvalidScript(RepositoryError):
    def __init__(self, name: str, detail: str) -> None:
        self.name, self.detail = name, detail
        super().__init__(f"Invalid script {name}: {detail}")


class InvalidScriptName(RepositoryError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Invalid script name {name!r}: use a letter or _, then letters, digits, _, . or - (at most 128)"
        )


class NotScriptOwner(RepositoryError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Only the creator of global script {name} or an administrator may change it")


class AdminRequired(NotScriptOwner):
    def __init__(self, name: str) -> None:
        self.name = name
        RepositoryError.__init__(
            self, f"Creating, replacing or dropping global script {name} needs an administrator (as PYQADMIN)"
        )
