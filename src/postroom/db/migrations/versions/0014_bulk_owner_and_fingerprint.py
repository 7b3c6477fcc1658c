"""bulk sends: owner and request fingerprint

``email_bulks.api_key_id`` is the API key that sent a bulk send (NULL: the
in-process facade or the CLI): a ``send``-scoped key reads only its own, as for
``email_jobs``. ``email_bulks.request_hash`` is the fingerprint of the request an
idempotency key was first used with, so a reuse with another body is refused.

Revision ID: 0014
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("email_bulks", sa.Column("request_hash", sa.String(length=64), nullable=True))
    op.add_column("email_bulks", sa.Column("api_key_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_bulks") as batch:
        batch.drop_column("api_key_id")
        batch.drop_column("request_hash")
