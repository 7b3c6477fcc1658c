"""The shared part of a bulk send, joined to each recipient's job when it is sent.

A bulk job stores only its recipient (address, name, data, metadata); the message
itself is stored once in ``email_bulks``. Bulk rows never change, so they are cached.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailBulk
from postroom.errors import ComposeError
from postroom.shared_reads import SharedReads

bulks_t = cast(Table, EmailBulk.__table__)
CACHE_SIZE = 64


class SharedRequests:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: a bulk send's first claimed batch starts dozens of sends at once: one read
        self._reads: SharedReads[str, dict[str, Any]] = SharedReads()

    async def _shared(self, bulk_id: str) -> dict[str, Any]:
        if (found := self._cache.get(bulk_id)) is not None:
            self._cache.move_to_end(bulk_id)
            return found
        return await self._reads.get(bulk_id, lambda: self._read(bulk_id))

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
