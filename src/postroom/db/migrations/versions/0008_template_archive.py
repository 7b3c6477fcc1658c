"""templates: archive instead of destroy

A deleted template that queued mail still needs is archived: hidden from lists and
refused for new mail, while its immutable versions stay for the jobs that pinned them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_templates") as batch:
        batch.add_column(
            sa.Column("archived_at", postroom.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_index("idx_email_templates_name", "email_templates", ["name"])


def downgrade() -> None:
    op.drop_index("idx_email_templates_name", table_name="email_templates")
    with op.batch_alter_table("email_templates") as batch:
        batch.drop_column("archived_at")
