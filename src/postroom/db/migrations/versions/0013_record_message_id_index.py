"""index email_records.message_id

ESP webhooks and bounce reports find their records by the provider's message id;
without an index each lookup reads the whole table.

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_records") as batch_op:
        batch_op.create_index("idx_email_records_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("email_records") as batch_op:
        batch_op.drop_index("idx_email_records_message_id")
