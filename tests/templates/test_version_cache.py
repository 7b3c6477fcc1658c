"""The worker's pinned-version reads: one query for the renders of a batch that miss
together, and a version that does not exist is an error for each of them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from postroom.app import Postroom
from postroom.errors import NotFound
from postroom.schemas.templates import TemplateCreate
from postroom.templates.versions import TemplateStore
from tests.support.databases import statements_naming

TEMPLATE = {"name": "hello", "subject": "Hi {{ name }}", "content": {"html": "<p>{{ name }}</p>"}}


def version_queries(postroom: Postroom) -> list[str]:
    return statements_naming(postroom.engine, "email_template_versions")


async def test_renders_that_miss_together_share_one_read(postroom: Postroom) -> None:
    created = await postroom.sender.templates.create(TemplateCreate.model_validate(TEMPLATE))
    store = TemplateStore(postroom.engine, postroom.clock)
    seen = version_queries(postroom)
    request = {"templatePin": {"id": created.id, "version": 1}, "to": [{"email": "a@x.test"}]}
    rendered = await asyncio.gather(
        *(store.render_request({**request, "templateData": {"name": f"n{i}"}}) for i in range(40))
    )
    assert len(seen) == 1
    assert all(f"<p>n{i}</p>" in r["content"]["html"] for i, r in enumerate(rendered))
    await store.load(uuid.UUID(created.id), 1)  # cached: no query
    assert len(seen) == 1


async def test_a_missing_version_fails_each_waiting_render(postroom: Postroom) -> None:
    store = TemplateStore(postroom.engine, postroom.clock)
    missing = uuid.uuid4()
    outcomes = await asyncio.gather(
        *(store.load(missing, 3) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, NotFound) for o in outcomes)
    with pytest.raises(NotFound):  # not cached as missing: read again
        await store.load(missing, 3)
