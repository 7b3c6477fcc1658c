"""Finding a row by what an operator types: its name (or prefix) or its id."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Table, or_


def as_uuid(text: str) -> uuid.UUID | None:
    """``text`` as a UUID, or None when it is not one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def by_name_or_id(table: Table, name_column: str, ident: str) -> ColumnElement[Any]:
    """``WHERE <name_column> = ident OR id = ident`` (the id part only for a UUID)."""
    cond: ColumnElement[Any] = table.c[name_column] == ident
    as_id = as_uuid(ident)
    if as_id is not None:
        cond = or_(cond, table.c.id == as_id)
    return cond
