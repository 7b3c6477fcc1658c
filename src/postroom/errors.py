"""The whole Postroom exception tree.

::

    PostroomError                      .http_status, .exit_code, .code
    ├── ConfigError                    bad settings; never retried
    ├── AuthError                      missing or bad API key (401)
    │   └── ForbiddenError             key lacks the scope (403)
    ├── NotFound                       404
    ├── UnsupportedMediaType           the body is not JSON (415)
    ├── Conflict                       409
    ├── RateLimited                    a limit is full right now (429)
    ├── NotRecorded                    an event's batch failed to commit (503)
    ├── InvalidProvider                a provider's settings are invalid (422)
    ├── MessageError                   the message itself is unacceptable (422)
    │   ├── RequestInvalid             .errors: every problem of a request, by field
    │   ├── IdempotencyKeyReused       the key was first used with another request
    │   ├── InvalidAddress(ValueError)
    │   ├── TemplateError
    │   ├── Suppressed
    │   ├── UnsupportedFeature         a provider cannot express part of it
    │   └── ComposeError               a stored request cannot become MIME: fail, no retry
    ├── ProviderError                  .provider, .status, .response_excerpt, .retryable
    │   ├── ProviderTransientError     SMTP 4xx, HTTP 429/5xx, drops: retry (.retry_after)
    │   │   ├── ProviderTimeout(TimeoutError)
    │   │   └── ProviderUnavailable    not reached, nothing sent: fail over, no attempt spent
    │   ├── ProviderRejected           SMTP 5xx, HTTP 4xx: fail, no retry
    │   └── ProviderAuthError          credentials refused: fail over, open the breaker
    └── WebhookError
        ├── WebhookAuthError           401
        └── WebhookPayloadError        400

Each class docstring is its default message. Nothing above ``providers/`` catches
vendor exceptions (aiosmtplib, httpx): adapters translate them here, ``from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PostroomError(Exception):
    """Postroom failed."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    #: stable, machine-readable slug used in problem+json ``type`` and job error codes
    code: ClassVar[str] = "error"

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or self.__class__.__name__).strip()
        self.context = context
        super().__init__(self.message)


class ConfigError(PostroomError):
    """The configuration is invalid."""

    exit_code = 2
    code = "config"


class AuthError(PostroomError):
    """A valid API key is required: send 'Authorization: Bearer <key>'."""

    http_status = 401
    code = "unauthorized"


class ForbiddenError(AuthError):
    """This API key does not have the scope this action needs."""

    http_status = 403
    code = "forbidden"


class NotFound(PostroomError):
    """Not found."""

    http_status = 404
    code = "not-found"


class UnsupportedMediaType(PostroomError):
    """The request body must be JSON: send 'Content-Type: application/json'."""

    http_status = 415
    code = "unsupported-media-type"


class Conflict(PostroomError):
    """The request conflicts with the current state."""

    http_status = 409
    code = "conflict"


class RateLimited(PostroomError):
    """A limit is full; try again when its window resets."""

    http_status = 429
    code = "rate-limited"


class NotRecorded(PostroomError):
    """The event could not be recorded; try again."""

    http_status = 503
    code = "not-recorded"


class InvalidProvider(PostroomError):
    """The provider's settings are invalid."""

    http_status = 422
    exit_code = 2
    code = "invalid-provider"


class MessageError(PostroomError):
    """The message cannot be sent as given."""

    http_status = 422
    code = "invalid-message"


class RequestInvalid(MessageError):
    """The request is invalid."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"the request is invalid: {summary}")
        #: ``[{"field": "to.0.email", "message": "..."}]``
        self.errors = errors


class IdempotencyKeyReused(MessageError):
    """This Idempotency-Key was already used with a different request."""

    code = "idempotency-key-reused"


class InvalidAddress(MessageError, ValueError):
    """The email address is invalid."""

    code = "invalid-address"


class TemplateError(MessageError):
    """The template could not be rendered."""

    code = "template"


class Suppressed(MessageError):
    """The recipient is suppressed."""

    code = "suppressed"


class UnsupportedFeature(MessageError):
    """The provider cannot express part of this message."""

    code = "unsupported-feature"


class ComposeError(MessageError):
    """The message cannot be composed from its request; retrying will not help."""

    code = "compose"


class ProviderError(PostroomError):
    """The provider failed to send the message."""

    http_status = 502
    code = "provider"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str | None = None,
        status: int | str | None = None,
        response_excerpt: str | None = None,
        retry_after: float | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.provider = provider
        #: SMTP reply code, enhanced status code or HTTP status, as the provider gave it
        self.status = status
        self.response_excerpt = response_excerpt[:500] if response_excerpt else None
        #: seconds the provider asked us to wait (Retry-After, rate-limit reset)
        self.retry_after = retry_after


class ProviderTransientError(ProviderError):
    """The provider failed temporarily; the message will be retried."""

    code = "provider-transient"
    retryable = True


class ProviderTimeout(ProviderTransientError, TimeoutError):
    """The provider did not answer in time."""

    code = "provider-timeout"


class ProviderUnavailable(ProviderTransientError):
    """The provider could not be reached; nothing was sent."""

    # DNS failure, connection refused or timed out, no greeting, every connection busy:
    # the message never reached the provider, so this is a deferral, not an attempt.
    # ``context["busy"]``: only the connection slots were full; the provider is not at fault.
    code = "provider-unavailable"


class ProviderRejected(ProviderError):
    """The provider rejected the message permanently."""

    code = "provider-rejected"


class ProviderAuthError(ProviderError):
    """The provider refused Postroom's credentials."""

    code = "provider-auth"
    # Another provider may still take the message, so it is retried (and failed over).
    retryable = True


class WebhookError(PostroomError):
    """The webhook request is not acceptable."""

    http_status = 400
    code = "webhook"


class WebhookAuthError(WebhookError):
    """The webhook signature or credentials are invalid."""

    http_status = 401
    code = "webhook-auth"


class WebhookPayloadError(WebhookError):
    """The webhook payload could not be parsed."""

    http_status = 400
    code = "webhook-payload"
