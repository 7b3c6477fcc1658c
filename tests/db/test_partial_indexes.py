"""Indexes on columns that are NULL while mail is queued hold only the rows where they are set."""

from __future__ import annotations

from sqlalchemy import text

from postroom.app import Postroom
from postroom.db import migrate
from postroom.db.models import Base

#: index -> the column it leaves out while NULL (migration 0017)
PARTIAL = {
    "idx_email_records_message_id": "message_id",
    "idx_email_records_opened_any_at": "opened_any_at",
    "idx_email_records_clicked_any_at": "clicked_any_at",
    "idx_email_records_bulk": "bulk_id",
    "idx_email_jobs_lease": "locked_until",
}


async def index_sql(postroom: Postroom) -> dict[str, str]:
    async with postroom.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        else:
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        rows = (await conn.execute(text(query))).all()
        return {str(name): str(sql) for name, sql in rows}


async def test_the_migrated_indexes_are_partial_as_the_models_say(postroom: Postroom) -> None:
    found = await index_sql(postroom)
    for name, column in PARTIAL.items():
        bare = found[name].replace("(", "").replace(")", "")  # PostgreSQL adds parentheses
        assert bare.endswith(f"WHERE {column} IS NOT NULL")
        index = next(i for t in Base.metadata.tables.values() for i in t.indexes if i.name == name)
        dialect = postroom.engine.dialect.name
        assert str(index.dialect_options[dialect]["where"]) == f"{column} IS NOT NULL"


async def test_down_to_0013_makes_them_full_again(postroom: Postroom) -> None:
    await migrate.downgrade(postroom.engine, "0013")
    found = await index_sql(postroom)
    assert all("WHERE" not in found[name] for name in PARTIAL)
    await migrate.upgrade(postroom.engine)
    found = await index_sql(postroom)
    assert all("WHERE" in found[name] for name in PARTIAL)
