"""templates archived instead of destroyed; bulk sends

A deleted template that queued mail still needs is archived: hidden from lists and
refused for new mail, while its immutable versions stay for the jobs that pinned them.
A bulk send stores its shared message once (``email_bulks``); each recipient's record
names its bulk, for progress. Sender domains keep their DKIM keys (private keys
encrypted like provider secrets), one active per domain, retired ones kept.

Revision ID: 0008
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.db.types

revision: str = "0008"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_templates") as batch:
        batch.add_column(
            sa.Column("archived_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_index("idx_email_templates_name", "email_templates", ["name"])
    op.create_table(
        "email_bulks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "request", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("queue_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["email_queues.id"],
            name=op.f("fk_email_bulks_queue_id_email_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_bulks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_email_bulks_idempotency_key")),
    )
    with op.batch_alter_table("email_records") as batch:
        batch.add_column(sa.Column("bulk_id", sa.Uuid(), nullable=True))
        batch.create_index("idx_email_records_bulk", ["bulk_id", "status"])
    op.create_table(
        "email_dkim_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=20), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_dkim_keys")),
        sa.UniqueConstraint("domain", "selector", name=op.f("uq_email_dkim_keys_domain")),
    )


def downgrade() -> None:
    op.drop_table("email_dkim_keys")
    with op.batch_alter_table("email_records") as batch:
        batch.drop_index("idx_email_records_bulk")
        batch.drop_column("bulk_id")
    op.drop_table("email_bulks")
    op.drop_index("idx_email_templates_name", table_name="email_templates")
    with op.batch_alter_table("email_templates") as batch:
        batch.drop_column("archived_at")
