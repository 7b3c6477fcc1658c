"""The write probe behind ``/healthz``: can the database store anything right now?

A ``SELECT 1`` answers while SQLite's disk is full, so health was green while every
send failed. The probe commits a row of a few pages (32 KiB) and deletes it in
the same transaction: that needs free pages (as an email does) and a commit (so a
WAL that cannot grow fails it), and leaves nothing behind.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import HealthProbe

probes_t = cast(Table, HealthProbe.__table__)
#: a few pages: about what a small email with its records needs
PADDING = bytes(32 * 1024)


async def check(engine: AsyncEngine, *, now: datetime) -> None:
    """Raise what the database raises unless it can both read and write."""
    async with reader(engine).connect() as conn:
        await conn.execute(text("SELECT 1"))
    probe_id = os.urandom(16).hex()
    async with engine.begin() as conn:
        await conn.execute(insert(probes_t).values(id=probe_id, written_at=now, padding=PADDING))
        await conn.execute(delete(probes_t).where(probes_t.c.id == probe_id))
