"""queue retry defaults

Transient failures used to be retried after 2, 4, 8 s, so a short provider outage
spent a message's whole budget. Queues now carry their backoff in ``retry``
(``baseDelaySeconds`` 30, ``maxDelaySeconds`` 3600) and default to 5 attempts,
about 15 minutes. Existing queues get the keys they lack; a queue still on the
old default of 3 attempts moves to 5. No schema change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import postroom.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ATTEMPTS, NEW_ATTEMPTS = 3, 5
NEW_KEYS: dict[str, Any] = {
    "backoff": "exponential",
    "baseDelaySeconds": 30.0,
    "maxDelaySeconds": 3600.0,
}

queues = sa.table(
    "email_queues",
    sa.column("id", sa.Uuid()),
    sa.column("retry", postroom.db.types.JSONType),
)


def _rewrite(change: Any) -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(queues.c.id, queues.c.retry)).all():
        before = dict(row.retry or {})
        after = change(dict(before))
        if after != before:
            conn.execute(sa.update(queues).where(queues.c.id == row.id).values(retry=after))


def upgrade() -> None:
    def change(retry: dict[str, Any]) -> dict[str, Any]:
        if retry.get("maxAttempts", OLD_ATTEMPTS) == OLD_ATTEMPTS:
            retry["maxAttempts"] = NEW_ATTEMPTS
        return {**NEW_KEYS, **retry}

    _rewrite(change)


def downgrade() -> None:
    def change(retry: dict[str, Any]) -> dict[str, Any]:
        for key, value in NEW_KEYS.items():
            if retry.get(key) == value:
                retry.pop(key)
        if retry.get("maxAttempts") == NEW_ATTEMPTS:
            retry["maxAttempts"] = OLD_ATTEMPTS
        return retry

    _rewrite(change)
