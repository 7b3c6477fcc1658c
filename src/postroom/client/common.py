"""What the sync and async clients share: requests, retries and errors.

Retries are safe because every send carries an ``Idempotency-Key`` (one is made
when the caller gives none) and every retry of that call reuses it: if the first
attempt was accepted but its answer lost, the retry gets the first answer back
instead of queueing the email twice. Only failures that may be transient are
retried: connection errors and timeouts, 429, 502, 503 and 504, honouring
``Retry-After``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from email.policy import SMTP
from typing import Any
from urllib.parse import quote

import httpx

from postroom.errors import PostroomError

API_PREFIX = "/api/system/email"
#: answers worth trying again: the server was busy or briefly away
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ApiError(PostroomError):
    """Postroom refused the request."""

    code = "api"

    def __init__(self, response: httpx.Response) -> None:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        #: the HTTP status and the problem+json body (``type``, ``title``, ``detail``, ``errors``)
        self.status_code = response.status_code
        self.problem: dict[str, Any] = problem
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        super().__init__(f"{response.status_code}: {detail}")

    @property
    def errors(self) -> list[dict[str, str]]:
        """Per-field problems of a 422, ``[{"field": ..., "message": ...}]``."""
        return list(self.problem.get("errors") or [])


class ApiUnavailable(PostroomError):
    """Postroom could not be reached, or stayed unavailable through every retry."""

    code = "api-unavailable"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often and how patiently a call is retried."""

    #: tries in all, the first included
    attempts: int = 4
    #: the first wait; doubles each retry
    backoff_s: float = 0.5
    #: the longest wait, also for a server's Retry-After
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before try ``attempt + 1``."""
        wait = self.backoff_s * 2 ** (attempt - 1)
        if response is not None:
            try:
                wait = max(wait, float(response.headers.get("retry-after", "")))
            except ValueError:
                pass
        return float(min(wait, self.max_backoff_s))


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES


def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def raw_body(
    message: bytes | Message,
    *,
    to: Sequence[str] | None,
    from_: str | None,
    queue: str | None,
) -> dict[str, Any]:
    """The JSON form of ``POST /send/raw``."""
    data = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP)
    body: dict[str, Any] = {"raw": base64.b64encode(data).decode("ascii")}
    if to is not None:
        body["to"] = list(to)
    if from_ is not None:
        body["from"] = from_
    if queue is not None:
        body["queue"] = queue
    return body


def request_body(request: Mapping[str, Any] | Any) -> Any:
    """A send request as JSON: a mapping as is, a pydantic model by its aliases."""
    if hasattr(request, "model_dump"):
        return request.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(request)


def segment(value: str) -> str:
    """``value`` as one URL path segment (a template name may hold ``/`` or spaces)."""
    return quote(value, safe="")


def template_path(template: str) -> str:
    return f"/templates/{segment(template)}"


def preview_body(template_data: Mapping[str, Any] | None, version: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if template_data is not None:
        body["templateData"] = dict(template_data)
    if version is not None:
        body["version"] = version
    return body


def checked(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    raise ApiError(response)
