"""analytics rollup dimensions and the rolled-day log

``email_analytics_daily`` gains the message type and campaign tag as dimensions
and a failed count; ``email_analytics_days`` records which UTC days have been
rolled up, so a day is summed from the live tables once and read from the
rollups after that. ``email_analytics_hourly`` / ``email_analytics_hours`` do the
same per UTC hour (today's closed hours, hourly trends).

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_RECORD_TIMES = ("delivered_at", "bounced_at", "opened_at", "clicked_at")
_FIGURES = (
    *("sent", "delivered", "bounced", "complained"),
    *("opened", "clicked", "unsubscribed", "failed"),
)


def _when(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, postroom.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("email_analytics_daily") as batch:
        batch.add_column(sa.Column("type", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("tag", sa.String(length=100), nullable=True))
        batch.add_column(
            sa.Column("total_failed", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.create_table(
        "email_analytics_days",
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("rolled_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("date", name=op.f("pk_email_analytics_days")),
    )
    op.create_table(
        "email_analytics_hourly",
        sa.Column("id", sa.Uuid(), nullable=False),
        _when("hour", nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("queue_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=True),
        sa.Column("tag", sa.String(length=100), nullable=True),
        *(
            sa.Column(f"total_{f}", sa.Integer(), server_default=sa.text("0"), nullable=False)
            for f in _FIGURES
        ),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["email_providers.id"],
            name=op.f("fk_email_analytics_hourly_provider_id_email_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["email_queues.id"],
            name=op.f("fk_email_analytics_hourly_queue_id_email_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_analytics_hourly")),
    )
    op.create_index("idx_email_analytics_hourly_hour", "email_analytics_hourly", ["hour"])
    op.create_table(
        "email_analytics_hours",
        _when("hour", nullable=False),
        _when("rolled_at", nullable=False),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_email_analytics_hours")),
    )
    # the live part of today is counted from the live tables by these timestamps
    for column in _RECORD_TIMES:
        op.create_index(f"idx_email_records_{column}", "email_records", [column])
    op.create_index("idx_email_jobs_failed_at", "email_jobs", ["failed_at"])
    op.create_index(
        "idx_email_tracking_events_type_time", "email_tracking_events", ["type", "timestamp"]
    )


def downgrade() -> None:
    op.drop_table("email_analytics_hours")
    op.drop_index("idx_email_analytics_hourly_hour", table_name="email_analytics_hourly")
    op.drop_table("email_analytics_hourly")
    op.drop_index("idx_email_tracking_events_type_time", table_name="email_tracking_events")
    op.drop_index("idx_email_jobs_failed_at", table_name="email_jobs")
    for column in _RECORD_TIMES:
        op.drop_index(f"idx_email_records_{column}", table_name="email_records")
    op.drop_table("email_analytics_days")
    with op.batch_alter_table("email_analytics_daily") as batch:
        batch.drop_column("total_failed")
        batch.drop_column("tag")
        batch.drop_column("type")
