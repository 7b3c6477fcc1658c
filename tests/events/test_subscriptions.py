"""The cached set of event kinds endpoints want, readable without a connection."""

from __future__ import annotations

from postroom.app import Postroom
from postroom.events import subscriptions


async def test_the_cached_answer_is_read_without_a_connection_until_invalidated(
    postroom: Postroom,
) -> None:
    engine = postroom.engine
    subscriptions.invalidate(engine)
    assert subscriptions.cached(engine) is None  # nothing read yet: the caller must read
    async with engine.connect() as conn:
        kinds = await subscriptions.wanted(conn)
    assert subscriptions.cached(engine) == kinds
    subscriptions.invalidate(engine)
    assert subscriptions.cached(engine) is None
