"""Provider rows for tests: insert them as the API would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import Table, insert, update

from postroom.app import Postroom
from postroom.db.models import EmailProvider
from postroom.providers import credentials
from tests.providers.smtp_server import SMTPServer

providers_t = cast(Table, EmailProvider.__table__)


async def add_provider(
    postroom: Postroom,
    *,
    name: str,
    type: str,
    priority: int = 100,
    config: dict[str, Any] | None = None,
    authentication: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    monitoring: dict[str, Any] | None = None,
    enabled: bool = True,
) -> uuid.UUID:
    provider_id = uuid.uuid4()
    now = postroom.clock.now()
    async with postroom.engine.begin() as conn:
        await conn.execute(
            insert(providers_t).values(
                id=provider_id,
                name=name,
                type=type,
                enabled=enabled,
                priority=priority,
                config=config or {},
                authentication=credentials.encrypt(postroom.fernet, authentication or {}),
                limits=limits or {},
                monitoring=monitoring or {},
                created_at=now,
                updated_at=now,
            )
        )
    return provider_id


async def disable_all(postroom: Postroom) -> None:
    async with postroom.engine.begin() as conn:
        await conn.execute(update(providers_t).values(enabled=False))


@asynccontextmanager
async def only_smtp_provider(postroom: Postroom, name: str) -> AsyncIterator[SMTPServer]:
    """An in-process SMTP server as the one enabled provider, ``name``."""
    async with SMTPServer() as server:
        await disable_all(postroom)
        await add_provider(
            postroom,
            name=name,
            type="smtp",
            config={"host": server.host, "port": server.port, "socketTimeout": 2000},
        )
        yield server
