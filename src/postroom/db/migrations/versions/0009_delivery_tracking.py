"""delivery tracking: event deduplication, machine flags, webhook nonces

One tracking row per recipient record (unique ``email_id``); events carry a
``dedupe_key`` (unique) so a repeated ESP event is stored once, and a ``machine``
flag for opens and clicks made by proxies and scanners. Webhook receipts keep the
provider they came for; ``webhook_nonces`` holds single-use signature tokens
(Mailgun) so a replayed request is refused.

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_tracking_events") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("machine", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.create_index(
        "uq_email_tracking_events_dedupe_key",
        "email_tracking_events",
        ["dedupe_key"],
        unique=True,
    )
    op.create_index("uq_email_tracking_email_id", "email_tracking", ["email_id"], unique=True)
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.add_column(sa.Column("provider_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "webhook_nonces",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("nonce", sa.String(length=255), nullable=False),
        sa.Column("seen_at", postroom.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_id", "nonce", name=op.f("pk_webhook_nonces")),
    )
    op.create_index("ix_webhook_nonces_seen_at", "webhook_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_nonces_seen_at", table_name="webhook_nonces")
    op.drop_table("webhook_nonces")
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.drop_column("error")
        batch.drop_column("provider_id")
    op.drop_index("uq_email_tracking_email_id", table_name="email_tracking")
    op.drop_index("uq_email_tracking_events_dedupe_key", table_name="email_tracking_events")
    with op.batch_alter_table("email_tracking_events") as batch:
        batch.drop_column("machine")
        batch.drop_column("dedupe_key")
