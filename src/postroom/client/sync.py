"""``PostroomClient``: the blocking client (scripts, Django, Flask, cron jobs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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


class PostroomClient:
    """One Postroom server, one API key; reuses its connections until closed."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retry: common.RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry = retry or common.RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + common.API_PREFIX,
            headers=common.headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    def send(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Queue an email (an ``EmailRequest`` or its JSON as a dict)."""
        response = self._post_request("/send", request, idempotency_key)
        return EmailSendResult.model_validate(common.checked(response))

    def send_raw(
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
        response = self._call(
            "POST", "/send/raw", json=body, headers=common.idempotency(idempotency_key)
        )
        return EmailSendResult.model_validate(common.checked(response))

    def status(self, email_id: str) -> EmailStatus:
        return EmailStatus.model_validate(common.checked(self._call("GET", f"/status/{email_id}")))

    def queues(self) -> QueueList:
        return QueueList.model_validate(common.checked(self._call("GET", "/queues")))

    # -- bulk sends --------------------------------------------------------------------

    def send_bulk(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> BulkAccepted:
        """Queue one message (or template) for many recipients (a ``BulkRequest`` or
        its JSON as a dict); each recipient gets their own email."""
        response = self._post_request("/bulk", request, idempotency_key)
        return BulkAccepted.model_validate(common.checked(response))

    def bulk_status(self, bulk_id: str) -> BulkProgress:
        """How far a bulk send is: queued, sent, failed, suppressed, every status."""
        response = self._call("GET", f"/bulk/{common.segment(bulk_id)}")
        return BulkProgress.model_validate(common.checked(response))

    # -- templates -----------------------------------------------------------------------

    def templates(self) -> TemplateList:
        """Every live template."""
        return TemplateList.model_validate(common.checked(self._call("GET", "/templates")))

    def template(self, template: str) -> TemplatePublic:
        """One template by id or name."""
        response = self._call("GET", common.template_path(template))
        return TemplatePublic.model_validate(common.checked(response))

    def create_template(self, template: Mapping[str, Any] | Any) -> TemplatePublic:
        """Create a template (a ``TemplateCreate`` or its JSON as a dict); version 1.
        A retry after a lost answer may meet the template it created: 409."""
        response = self._call("POST", "/templates", json=common.request_body(template))
        return TemplatePublic.model_validate(common.checked(response))

    def update_template(self, template: str, changes: Mapping[str, Any] | Any) -> TemplatePublic:
        """Change a template (a ``TemplateUpdate`` or its JSON); a new version when the
        subject, content or variables change."""
        response = self._call(
            "PUT", common.template_path(template), json=common.request_body(changes)
        )
        return TemplatePublic.model_validate(common.checked(response))

    def delete_template(self, template: str) -> TemplateDeleted:
        """Archive a template: refused for new mail, kept for mail already queued."""
        response = self._call("DELETE", common.template_path(template))
        return TemplateDeleted.model_validate(common.checked(response))

    def preview_template(
        self,
        template: str,
        template_data: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
    ) -> PreviewResult:
        """Render a template without sending (no data: each variable's example)."""
        body = common.preview_body(template_data, version)
        response = self._call("POST", common.template_path(template) + "/preview", json=body)
        return PreviewResult.model_validate(common.checked(response))

    def send_template(
        self, request: Mapping[str, Any] | Any, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Queue one email rendered from a template (``POST /template``)."""
        response = self._post_request("/template", request, idempotency_key)
        return EmailSendResult.model_validate(common.checked(response))

    def _post_request(
        self, path: str, request: Mapping[str, Any] | Any, idempotency_key: str | None
    ) -> httpx.Response:
        """POST a request body (a model or its JSON) under an Idempotency-Key."""
        return self._call(
            "POST",
            path,
            json=common.request_body(request),
            headers=common.idempotency(idempotency_key),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, retried as ``self.retry`` says with the same headers and body."""
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise common.ApiUnavailable(f"cannot reach Postroom: {exc}") from exc
                self._sleep(self.retry.delay(attempt, None))
                continue
            if not common.should_retry(response) or last:
                return response
            self._sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PostroomClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
