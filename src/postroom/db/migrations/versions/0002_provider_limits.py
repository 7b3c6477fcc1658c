"""provider limits, statistics and checks

Cluster-wide state of the providers: limit-window counters, per-minute send
outcomes and the latest health check of each provider.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _provider_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["provider_id"],
        ["email_providers.id"],
        name=op.f(f"fk_{table}_provider_id_email_providers"),
        ondelete="CASCADE",
    )


def _when(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, postroom.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "provider_limit_counters",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        _when("window_start", nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        _provider_fk("provider_limit_counters"),
        sa.PrimaryKeyConstraint(
            "provider_id", "kind", "window_start", name=op.f("pk_provider_limit_counters")
        ),
    )
    op.create_table(
        "provider_stats",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        _when("minute", nullable=False),
        sa.Column("sent", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("throttled", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rejected", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("latency_ms_total", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("latency_samples", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _when("last_success_at"),
        _when("last_failure_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _provider_fk("provider_stats"),
        sa.PrimaryKeyConstraint("provider_id", "minute", name=op.f("pk_provider_stats")),
    )
    op.create_table(
        "provider_checks",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        _when("started_at", nullable=False),
        _when("checked_at"),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _provider_fk("provider_checks"),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_checks")),
    )


def downgrade() -> None:
    op.drop_table("provider_checks")
    op.drop_table("provider_stats")
    op.drop_table("provider_limit_counters")
