"""bulk sends: owner and request fingerprint; partial indexes on event times

``email_bulks.api_key_id`` is the API key that sent a bulk send (NULL: the
in-process facade or the CLI): a ``send``-scoped key reads only its own, as for
``email_jobs``. ``email_bulks.request_hash`` is the fingerprint of the request an
idempotency key was first used with, so a reuse with another body is refused.

The indexes on times that are NULL when mail is queued (``sent_at``,
``delivered_at``, ``bounced_at``, ``opened_at``, ``clicked_at`` of records and
``failed_at`` of jobs) become partial (``WHERE … IS NOT NULL``): every query that
reads them compares the time (which implies NOT NULL), and queueing no longer
writes six index entries of NULL per recipient (a quarter of the database's work
for a bulk send).

Revision ID: 0014
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: (table, column) of each time index made partial; the index is idx_<table>_<column>
PARTIAL = (
    ("email_records", "sent_at"),
    ("email_records", "delivered_at"),
    ("email_records", "bounced_at"),
    ("email_records", "opened_at"),
    ("email_records", "clicked_at"),
    ("email_jobs", "failed_at"),
)


def upgrade() -> None:
    op.add_column("email_bulks", sa.Column("request_hash", sa.String(length=64), nullable=True))
    op.add_column("email_bulks", sa.Column("api_key_id", sa.Uuid(), nullable=True))
    for table, column in PARTIAL:
        name = f"idx_{table}_{column}"
        op.drop_index(name, table_name=table)
        present = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], postgresql_where=present, sqlite_where=present)


def downgrade() -> None:
    for table, column in PARTIAL:
        name = f"idx_{table}_{column}"
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
    with op.batch_alter_table("email_bulks") as batch:
        batch.drop_column("api_key_id")
        batch.drop_column("request_hash")
