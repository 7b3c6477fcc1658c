"""job owner, request fingerprint, and the health write probe

``email_jobs.api_key_id`` records which API key sent an email (NULL: the
in-process facade or the CLI), so ``send``-scoped keys see only their own mail
and idempotency keys are scoped per API key. ``email_jobs.request_hash`` is the
fingerprint of the request an idempotency key was first used with, so a reuse
with another body is refused. ``health_probes`` takes the write that
``/healthz`` commits to prove the database can still store mail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("email_jobs", sa.Column("api_key_id", sa.Uuid(), nullable=True))
    op.add_column("email_jobs", sa.Column("request_hash", sa.String(length=64), nullable=True))
    op.create_table(
        "health_probes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("written_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("padding", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_probes")),
    )


def downgrade() -> None:
    op.drop_table("health_probes")
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("api_key_id")
