"""``AsyncPostroomClient``: the asyncio client (FastAPI, aiohttp, workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.message import Message
from types import TracebackType
from typing import Any

import httpx

from postroom.client import common
from postroom.schemas.bulk import BulkAccepted, BulkProgress
from postroom.schemas.queues import QueueList
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.schemas.templates import (
    PreviewResult,
    TemplateDeleted,
    TemplateList,
    TemplatePublic,
)


class AsyncPostroomClient:
    """One Postroom server, one API key; reuses its connections until closed."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retry: common.RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retry = retry or common.RetryPolicy()
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + common.API_PREFIX,
            headers=common.headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    async def send(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Queue an email (an ``EmailRequest`` or its JSON as a dict)."""
        response = await self._post_request("/send", request, idempotency_key)
        return EmailSendResult.model_validate(common.checked(response))

    async def send_raw(
        self,
        message: bytes | Message,
        *,
        to: Sequence[str] | None = None,
        from_: str | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> EmailSendResult:
        """Queue a finished MIME message; ``to`` defaults to its To, Cc and Bcc."""
        body = common.raw_body(message, to=to, from_=from_, queue=queue)
        response = await self._call(
            "POST", "/send/raw", json=body, headers=common.idempotency(idempotency_key)
        )
        return EmailSendResult.model_validate(common.checked(response))

    async def status(self, email_id: str) -> EmailStatus:
        response = await self._call("GET", f"/status/{email_id}")
        return EmailStatus.model_validate(common.checked(response))

    async def queues(self) -> QueueList:
        return QueueList.model_validate(common.checked(await self._call("GET", "/queues")))

    # -- bulk sends --------------------------------------------------------------------

    async def send_bulk(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> BulkAccepted:
        """Queue one message (or template) for many recipients (a ``BulkRequest`` or
        its JSON as a dict); each recipient gets their own email."""
        response = await self._post_request("/bulk", request, idempotency_key)
        return BulkAccepted.model_validate(common.checked(response))

    async def bulk_status(self, bulk_id: str) -> BulkProgress:
        """How far a bulk send is: queued, sent, failed, suppressed, every status."""
        response = await self._call("GET", f"/bulk/{common.segment(bulk_id)}")
        return BulkProgress.model_validate(common.checked(response))

    # -- templates -----------------------------------------------------------------------

    async def templates(self) -> TemplateList:
        """Every live template."""
        return TemplateList.model_validate(common.checked(await self._call("GET", "/templates")))

    async def template(self, template: str) -> TemplatePublic:
        """One template by id or name."""
        response = await self._call("GET", common.template_path(template))
        return TemplatePublic.model_validate(common.checked(response))

    async def create_template(self, template: Mapping[str, Any] | Any) -> TemplatePublic:
        """Create a template (a ``TemplateCreate`` or its JSON as a dict); version 1.
        A retry after a lost answer may meet the template it created: 409."""
        response = await self._call("POST", "/templates", json=common.request_body(template))
        return TemplatePublic.model_validate(common.checked(response))

    async def update_template(
        self, template: str, changes: Mapping[str, Any] | Any
    ) -> TemplatePublic:
        """Change a template (a ``TemplateUpdate`` or its JSON); a new version when the
        subject, content or variables change."""
        response = await self._call(
            "PUT", common.template_path(template), json=common.request_body(changes)
        )
        return TemplatePublic.model_validate(common.checked(response))

    async def delete_template(self, template: str) -> TemplateDeleted:
        """Archive a template: refused for new mail, kept for mail already queued."""
        response = await self._call("DELETE", common.template_path(template))
        return TemplateDeleted.model_validate(common.checked(response))

    async def preview_template(
        self,
        template: str,
        template_data: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
    ) -> PreviewResult:
        """Render a template without sending (no data: each variable's example)."""
        body = common.preview_body(template_data, version)
        response = await self._call("POST", common.template_path(template) + "/preview", json=body)
        return PreviewResult.model_validate(common.checked(response))

    async def send_template(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Queue one email rendered from a template (``POST /template``)."""
        response = await self._post_request("/template", request, idempotency_key)
        return EmailSendResult.model_validate(common.checked(response))

    async def _post_request(
        self, path: str, request: Mapping[str, Any] | Any, idempotency_key: str | None
    ) -> httpx.Response:
        """POST a request body (a model or its JSON) under an Idempotency-Key."""
        return await self._call(
            "POST",
            path,
            json=common.request_body(request),
            headers=common.idempotency(idempotency_key),
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, retried as ``self.retry`` says with the same headers and body."""
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise common.ApiUnavailable(f"cannot reach Postroom: {exc}") from exc
                await self._sleep(self.retry.delay(attempt, None))
                continue
            if not common.should_retry(response) or last:
                return response
            await self._sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPostroomClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
