"""ESP webhooks: ``POST /webhook/{provider}`` and the spec's ``POST /webhook?provider=``.

No API key: each request is verified by its ESP's own scheme with the secrets in
the provider's ``authentication``. The raw body is read here untouched, whatever
its content type (SendGrid, Mailgun and Postmark post JSON; SNS posts JSON as
``text/plain``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from postroom.api.deps import PostroomDep
from postroom.app import Postroom
from postroom.tracking.webhooks.intake import WebhookIntake

router = APIRouter(tags=["webhooks"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _PROBLEM,
    401: _PROBLEM,
    403: _PROBLEM,
    404: _PROBLEM,
}


def intake(postroom: Postroom) -> WebhookIntake:
    return WebhookIntake(
        postroom.engine,
        postroom.fernet,
        postroom.clock,
        max_age_s=postroom.settings.webhook_max_age_s,
        soft_limit=postroom.settings.suppress_after_soft_bounces,
    )


@router.post("/webhook/{provider}", responses=_ERRORS)
async def provider_webhook(
    provider: str, request: Request, postroom: PostroomDep
) -> dict[str, Any]:
    """Events from the ESP behind ``provider`` (its name or id)."""
    return await intake(postroom).receive(provider, await request.body(), request.headers)


@router.post("/webhook", responses=_ERRORS)
async def webhook(
    request: Request,
    postroom: PostroomDep,
    provider: Annotated[str, Query(description="the provider's name or id")],
) -> dict[str, Any]:
    """The spec's webhook endpoint: the provider is named in the query."""
    return await intake(postroom).receive(provider, await request.body(), request.headers)
