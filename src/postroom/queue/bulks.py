"""The shared part of a bulk send, joined to each recipient's job when it is sent.

A bulk job stores only its recipient (address, name, data, metadata); the message
itself is stored once in ``email_bulks``. Bulk rows never change, so they are cached.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailBulk
from postroom.errors import ComposeError

bulks_t = cast(Table, EmailBulk.__table__)
CACHE_SIZE = 64


class SharedRequests:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: reads under way: a bulk send's first claimed batch starts dozens of sends
        #: at once, which wait for one read instead of each opening a connection
        self._reading: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def _shared(self, bulk_id: str) -> dict[str, Any]:
        if (found := self._cache.get(bulk_id)) is not None:
            self._cache.move_to_end(bulk_id)
            return found
        if (reading := self._reading.get(bulk_id)) is None:
            reading = self._reading[bulk_id] = asyncio.ensure_future(self._read(bulk_id))
            reading.add_done_callback(lambda _: self._reading.pop(bulk_id, None))
        return await asyncio.shield(reading)

    async def _read(self, bulk_id: str) -> dict[str, Any]:
        query = select(bulks_t.c.request).where(bulks_t.c.id == uuid.UUID(bulk_id))
        async with reader(self.engine).connect() as conn:
            shared = (await conn.execute(query)).scalar_one_or_none()
        if shared is None:
            raise ComposeError(f"bulk send {bulk_id} is gone")
        self._cache[bulk_id] = shared
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return cast(dict[str, Any], shared)

    async def request(self, data: dict[str, Any]) -> dict[str, Any]:
        """The full request of bulk job ``data``: shared part, then the recipient's own."""
        shared = await self._shared(data["bulk"])
        own: dict[str, Any] = data["request"]
        merged = {**shared, "to": own["to"]}
        if "metadata" in own:
            merged["metadata"] = {**shared.get("metadata", {}), **own["metadata"]}
        if "templateData" in own:
            merged["templateData"] = {**shared.get("templateData", {}), **own["templateData"]}
        return merged
