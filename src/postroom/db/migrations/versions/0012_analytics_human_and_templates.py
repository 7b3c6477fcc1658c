"""analytics: opens and clicks by anyone beside human ones, and the template dimension

``email_records`` gains ``opened_any_at`` / ``clicked_any_at``: the first open or
click of any kind, machine-made included (``opened_at`` / ``clicked_at`` keep only
people's), filled from the tracking events already stored; and ``tag`` /
``template_id``, the analytics dimensions copied from the request when queued (so
counting needs no look-up of the job), filled from the jobs and bulk sends. The rollups gain
``template_id`` and the human open and click counts; the rollups made before are
emptied so each period is summed again, with the new figures, on first use.

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0012"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ANY = (("opened_any_at", "opened_at", "opened"), ("clicked_any_at", "clicked_at", "clicked"))
_ROLLUPS = ("email_analytics_daily", "email_analytics_hourly")


def _json_text(column: str, path: Sequence[str | int], pg: bool) -> str:
    if pg:
        return f"{column} #>> '{{{','.join(str(p) for p in path)}}}'"
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return f"json_extract({column}, '${dotted}')"


def _backfill_dimensions() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for column, job_path, bulk_path, cast in (
        ("tag", ("request", "tags", 0), ("tags", 0), ""),
        ("template_id", ("request", "templatePin", "id"), ("templatePin", "id"), "uuid"),
    ):
        job_value = _json_text("j.data", job_path, pg)
        bulk_value = _json_text("b.request", bulk_path, pg)
        if cast and pg:
            job_value, bulk_value = f"({job_value})::uuid", f"({bulk_value})::uuid"
        elif cast:  # SQLite stores a Uuid as 32 hex digits
            job_value = f"replace({job_value}, '-', '')"
            bulk_value = f"replace({bulk_value}, '-', '')"
        if column == "tag":
            job_value, bulk_value = f"substr({job_value}, 1, 100)", f"substr({bulk_value}, 1, 100)"
        op.execute(
            f"UPDATE email_records SET {column} = COALESCE("
            f"(SELECT {job_value} FROM email_jobs j WHERE j.id = email_records.job_id), "
            f"(SELECT {bulk_value} FROM email_bulks b WHERE b.id = email_records.bulk_id))"
        )


def upgrade() -> None:
    with op.batch_alter_table("email_records") as batch:
        for column, _, _ in _ANY:
            batch.add_column(
                sa.Column(column, postroom.db.types.UTCDateTime(timezone=True), nullable=True)
            )
        batch.add_column(sa.Column("tag", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("template_id", sa.Uuid(), nullable=True))
    _backfill_dimensions()
    for column, human, kind in _ANY:
        first_event = (
            "SELECT MIN(e.timestamp) FROM email_tracking_events e "
            "JOIN email_tracking t ON t.id = e.tracking_id "
            f"WHERE t.email_id = email_records.id AND e.type = '{kind}'"
        )
        op.execute(
            f"UPDATE email_records SET {column} = ({first_event}) WHERE EXISTS ({first_event})"
        )
        op.execute(
            f"UPDATE email_records SET {column} = {human} WHERE {human} IS NOT NULL "
            f"AND ({column} IS NULL OR {column} > {human})"
        )
        op.create_index(f"idx_email_records_{column}", "email_records", [column])
    for table in _ROLLUPS:
        op.execute(f"DELETE FROM {table}")
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("template_id", sa.Uuid(), nullable=True))
            for figure in ("human_opened", "human_clicked"):
                batch.add_column(
                    sa.Column(
                        f"total_{figure}", sa.Integer(), server_default=sa.text("0"), nullable=False
                    )
                )
    op.execute("DELETE FROM email_analytics_days")
    op.execute("DELETE FROM email_analytics_hours")


def downgrade() -> None:
    for table in _ROLLUPS:
        op.execute(f"DELETE FROM {table}")
        with op.batch_alter_table(table) as batch:
            batch.drop_column("total_human_clicked")
            batch.drop_column("total_human_opened")
            batch.drop_column("template_id")
    op.execute("DELETE FROM email_analytics_days")
    op.execute("DELETE FROM email_analytics_hours")
    for column, _, _ in _ANY:
        op.drop_index(f"idx_email_records_{column}", table_name="email_records")
    with op.batch_alter_table("email_records") as batch:
        batch.drop_column("template_id")
        batch.drop_column("tag")
        for column, _, _ in reversed(_ANY):
            batch.drop_column(column)
