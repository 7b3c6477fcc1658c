"""``INSERT … ON CONFLICT DO UPDATE``, the same on SQLite (≥ 3.35) and PostgreSQL.

SQLAlchemy spells the upsert per dialect; this picks the right one so that callers
write one statement for both engines. Counters use it to increment atomically in
a single round trip, with ``RETURNING`` giving the new values back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert

#: builds the ``SET`` clause from the target table and the ``excluded`` pseudo-table
SetClause = Callable[[Table, ReadOnlyColumnCollection[str, Any]], Mapping[str, Any]]


def upsert(
    dialect: str,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    set_: SetClause,
    where: Callable[[Table], ColumnElement[bool]] | None = None,
) -> Insert:
    """``INSERT rows ON CONFLICT (keys) DO UPDATE SET set_(table, excluded) [WHERE …]``."""
    if dialect == "postgresql":
        pg = postgresql.insert(table).values(list(rows))
        return pg.on_conflict_do_update(
            index_elements=list(keys),
            set_=dict(set_(table, pg.excluded)),
            where=where(table) if where else None,
        )
    if dialect == "sqlite":
        lite = sqlite.insert(table).values(list(rows))
        return lite.on_conflict_do_update(
            index_elements=list(keys),
            set_=dict(set_(table, lite.excluded)),
            where=where(table) if where else None,
        )
    raise NotImplementedError(f"no upsert for the {dialect} dialect")
