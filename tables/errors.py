"""Table errors.

TablesError
├── TableNotFound(name, owner)   no such table, or the caller may not read it (never tells which)
├── TableExists(name)            create over an existing table
├── InvalidTableName(name)       a table or column name that breaks the naming rules
│   ├── ReservedTableName(name)  a reserved word, or a name the databases or pyqd keep (sqlite_*, pg_*, pyqd_*)
│   └── TableNameClash(name, existing)  (SQLite) another table's name differs from it only in case
├── InvalidTableData(detail)     an upload that cannot be parsed, or that does not fit the table
└── QueryRejected(message)       the gate refused the input query, or the database failed to run it
    └── QueryTimedOut(seconds)   the query ran past its deadline (the call's time limit) and was stopped
"""

from __future__ import annotations


class TablesError(Exception):
    """Base of the table errors."""


class TableNotFound(TablesError):
    def __init__(self, name: str, owner: str | None = None) -> None:
        self.name, self.owner = name, owner
        qualified = f"{owner}.{name}" if owner else name
        super().__init__(f"Table {qualified} does not exist or is not accessible")


class TableExists(TablesError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Table {name} already exists; use mode replace or append")


class InvalidTableName(TablesError):
    def __init__(self, name: str, what: str = "table") -> None:
        self.name = name
        rule = (
            "a letter, then letters, digits, _, $ or # (at most 63)"
            if what == "table"
            else "1 to 63 bytes (UTF-8), no NUL or double quote, unique ignoring case"
        )
        super().__init__(f"Invalid {what} name {name!r}: {rule}")


class ReservedTableName(InvalidTableName):
    def __init__(self, name: str) -> None:
        self.name = name
        TablesError.__init__(
            self,
            f"Invalid table name {name!r}: it is a reserved word or starts with a reserved prefix "
            "(sqlite_, pg_, pyqd_)",
        )


class TableNameClash(InvalidTableName):
    def __init__(self, name: str, existing: str) -> None:
        self.name, self.existing = name, existing
        TablesError.__init__(
            self, f"Table {name} clashes with the existing table {existing}: table names here ignore case"
        )


class InvalidTableData(TablesError):
    pass


class QueryRejected(TablesError):
    """The SQL gate refused the input query (not one read-only query, or a table the caller may not read)."""


class QueryTimedOut(QueryRejected):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"The input query ran longer than {seconds:g} s and was stopped")
