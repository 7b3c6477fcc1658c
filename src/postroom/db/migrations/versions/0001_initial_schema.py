"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scopes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("last_used_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "email_providers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("(100)"), nullable=False),
        sa.Column(
            "config", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "limits",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "authentication",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "encryption",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "monitoring",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_providers")),
    )
    with op.batch_alter_table("email_providers", schema=None) as batch_op:
        batch_op.create_index("idx_email_providers_enabled", ["enabled"], unique=False)
        batch_op.create_index(
            "idx_email_providers_priority", [sa.text("priority DESC")], unique=False
        )

    op.create_table(
        "email_queues",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column(
            "priority", sa.String(length=20), server_default=sa.text("'normal'"), nullable=False
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column(
            "config", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "processor", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "retry", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "monitoring",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_queues")),
        sa.UniqueConstraint("name", name=op.f("uq_email_queues_name")),
    )
    with op.batch_alter_table("email_queues", schema=None) as batch_op:
        batch_op.create_index("idx_email_queues_enabled", ["enabled"], unique=False)

    op.create_table(
        "email_suppressions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column(
            "scope", sa.String(length=50), server_default=sa.text("'global'"), nullable=False
        ),
        sa.Column("reason", sa.String(length=50), nullable=False),
        sa.Column("source_event_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("expires_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_suppressions")),
        sa.UniqueConstraint("email", "scope", name="uq_email_suppressions_email_scope"),
    )
    op.create_table(
        "email_templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column(
            "content", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
    )
    op.create_table(
        "webhook_receipts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_type", sa.String(length=50), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("processed_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_receipts")),
        sa.UniqueConstraint(
            "provider_type", "provider_event_id", name="uq_webhook_receipts_provider_event"
        ),
    )
    op.create_table(
        "email_analytics_daily",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("queue_id", sa.Uuid(), nullable=True),
        sa.Column("total_sent", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_delivered", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_bounced", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_complained", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_opened", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_clicked", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_unsubscribed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("avg_processing_time", sa.Numeric(precision=8, scale=3), nullable=True),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["email_providers.id"],
            name=op.f("fk_email_analytics_daily_provider_id_email_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["email_queues.id"],
            name=op.f("fk_email_analytics_daily_queue_id_email_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_analytics_daily")),
    )
    with op.batch_alter_table("email_analytics_daily", schema=None) as batch_op:
        batch_op.create_index("idx_email_analytics_daily_date", ["date"], unique=False)
        batch_op.create_index(
            "idx_email_analytics_daily_provider", ["provider_id", "date"], unique=False
        )

    op.create_table(
        "email_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("queue_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column(
            "scheduled_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("processed_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failed_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("locked_until", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("last_error_code", sa.String(length=100), nullable=True),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["email_queues.id"],
            name=op.f("fk_email_jobs_queue_id_email_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_email_jobs_idempotency_key")),
    )
    with op.batch_alter_table("email_jobs", schema=None) as batch_op:
        batch_op.create_index("idx_email_jobs_lease", ["status", "locked_until"], unique=False)
        batch_op.create_index(
            "idx_email_jobs_claim",
            ["status", sa.text("priority DESC"), "scheduled_at", "id"],
            unique=False,
        )
        batch_op.create_index("idx_email_jobs_queue_status", ["queue_id", "status"], unique=False)
        batch_op.create_index("idx_email_jobs_scheduled_at", ["scheduled_at"], unique=False)

    op.create_table(
        "email_template_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column(
            "content", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["email_templates.id"],
            name=op.f("fk_email_template_versions_template_id_email_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_template_versions")),
        sa.UniqueConstraint(
            "template_id", "version", name=op.f("uq_email_template_versions_template_id")
        ),
    )
    op.create_table(
        "email_job_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("provider_name", sa.String(length=255), nullable=True),
        sa.Column("started_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Numeric(precision=12, scale=3, asdecimal=False), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["email_jobs.id"],
            name=op.f("fk_email_job_attempts_job_id_email_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["email_providers.id"],
            name=op.f("fk_email_job_attempts_provider_id_email_providers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_job_attempts")),
    )
    with op.batch_alter_table("email_job_attempts", schema=None) as batch_op:
        batch_op.create_index("idx_email_job_attempts_job", ["job_id", "attempt"], unique=False)

    op.create_table(
        "email_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("queue_id", sa.Uuid(), nullable=True),
        sa.Column("recipient_email", sa.String(length=255), nullable=False),
        sa.Column(
            "recipient_type", sa.String(length=3), server_default=sa.text("'to'"), nullable=False
        ),
        sa.Column("recipient_name", sa.String(length=255), nullable=True),
        sa.Column("sender_email", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("sent_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounced_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opened_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("clicked_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["email_jobs.id"],
            name=op.f("fk_email_records_job_id_email_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["email_providers.id"],
            name=op.f("fk_email_records_provider_id_email_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["email_queues.id"],
            name=op.f("fk_email_records_queue_id_email_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_records")),
    )
    with op.batch_alter_table("email_records", schema=None) as batch_op:
        batch_op.create_index("idx_email_records_job", ["job_id"], unique=False)
        batch_op.create_index("idx_email_records_recipient", ["recipient_email"], unique=False)
        batch_op.create_index("idx_email_records_sent_at", ["sent_at"], unique=False)
        batch_op.create_index("idx_email_records_status", ["status"], unique=False)

    op.create_table(
        "email_tracking",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email_id", sa.Uuid(), nullable=True),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("recipient_email", sa.String(length=255), nullable=False),
        sa.Column(
            "tracking_enabled",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "events",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["email_records.id"],
            name=op.f("fk_email_tracking_email_id_email_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tracking")),
    )
    with op.batch_alter_table("email_tracking", schema=None) as batch_op:
        batch_op.create_index("idx_email_tracking_delivery_id", ["delivery_id"], unique=False)

    op.create_table(
        "email_tracking_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tracking_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column(
            "timestamp",
            postroom.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column(
            "ip_address",
            sa.String(length=45).with_variant(postgresql.INET(), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "location", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["tracking_id"],
            ["email_tracking.id"],
            name=op.f("fk_email_tracking_events_tracking_id_email_tracking"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tracking_events")),
    )
    with op.batch_alter_table("email_tracking_events", schema=None) as batch_op:
        batch_op.create_index(
            "idx_email_tracking_events_tracking_id", ["tracking_id"], unique=False
        )
        batch_op.create_index("idx_email_tracking_events_type", ["type"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("email_tracking_events", schema=None) as batch_op:
        batch_op.drop_index("idx_email_tracking_events_type")
        batch_op.drop_index("idx_email_tracking_events_tracking_id")

    op.drop_table("email_tracking_events")
    with op.batch_alter_table("email_tracking", schema=None) as batch_op:
        batch_op.drop_index("idx_email_tracking_delivery_id")

    op.drop_table("email_tracking")
    with op.batch_alter_table("email_records", schema=None) as batch_op:
        batch_op.drop_index("idx_email_records_status")
        batch_op.drop_index("idx_email_records_sent_at")
        batch_op.drop_index("idx_email_records_recipient")
        batch_op.drop_index("idx_email_records_job")

    op.drop_table("email_records")
    with op.batch_alter_table("email_job_attempts", schema=None) as batch_op:
        batch_op.drop_index("idx_email_job_attempts_job")

    op.drop_table("email_job_attempts")
    op.drop_table("email_template_versions")
    with op.batch_alter_table("email_jobs", schema=None) as batch_op:
        batch_op.drop_index("idx_email_jobs_scheduled_at")
        batch_op.drop_index("idx_email_jobs_queue_status")
        batch_op.drop_index("idx_email_jobs_lease")
        batch_op.drop_index("idx_email_jobs_claim")

    op.drop_table("email_jobs")
    with op.batch_alter_table("email_analytics_daily", schema=None) as batch_op:
        batch_op.drop_index("idx_email_analytics_daily_provider")
        batch_op.drop_index("idx_email_analytics_daily_date")

    op.drop_table("email_analytics_daily")
    op.drop_table("webhook_receipts")
    op.drop_table("email_templates")
    op.drop_table("email_suppressions")
    with op.batch_alter_table("email_queues", schema=None) as batch_op:
        batch_op.drop_index("idx_email_queues_enabled")

    op.drop_table("email_queues")
    with op.batch_alter_table("email_providers", schema=None) as batch_op:
        batch_op.drop_index("idx_email_providers_enabled")
        batch_op.drop_index("idx_email_providers_priority")

    op.drop_table("email_providers")
    op.drop_table("api_keys")
