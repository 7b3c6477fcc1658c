"""PostgreSQL LISTEN/NOTIFY: enqueues wake idle workers at once, without busy polling.

``store.enqueue_many`` queues a ``NOTIFY`` in the enqueuing transaction (so it is
delivered only on commit); :func:`listen` holds a dedicated connection that calls
``wake`` for each one. Polling remains the fallback while the connection is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.queue.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

#: wait before reconnecting after the LISTEN connection failed
RECONNECT_DELAY_S = 1.0


async def listen(engine: AsyncEngine, wake: Callable[[], None]) -> None:
    """Call ``wake`` on every enqueue NOTIFY, until cancelled.

    A dedicated asyncpg connection, not one from the pool: it stays LISTENing.
    After (re)connecting it wakes once, to catch up with anything enqueued
    while it was not listening.
    """
    import asyncpg

    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        conn = None
        try:
            conn = await asyncpg.connect(dsn)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_args: wake())
            wake()
            await lost.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN connection failed: %s", exc)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
        await asyncio.sleep(RECONNECT_DELAY_S)
