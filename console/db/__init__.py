"""The SQLite layer both database files use (the incident store's and the chart history's): opening, migrations,
damage recovery, per-thread readers (``database``) and the one writer thread per file (``writer``).

A low layer: it imports only the standard library, so the store and the history never depend on each other.
"""

from console.db.database import (
    Database,
    Migration,
    ReadConnections,
    Recovered,
    Schema,
    connect,
    explain,
    file_uri,
    migrate,
    peek,
    rollback,
    schema_version,
)
from console.db.writer import Handler, Writer, affects_every_write

__all__ = [
    "Database",
    "Handler",
    "Migration",
    "ReadConnections",
    "Recovered",
    "Schema",
    "Writer",
    "affects_every_write",
    "connect",
    "explain",
    "file_uri",
    "migrate",
    "peek",
    "rollback",
    "schema_version",
]
