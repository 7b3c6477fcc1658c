"""The provider endpoints' bodies: the spec's ``EmailProvider`` in and out, its
health, and the two tests (a provider's ``check()``, a test email).

Credentials (``authentication``) are write-only in effect: every response shows
them masked (``****``; API keys at most as ``****9f3a``). A PUT may send the masked
values back unchanged; they keep the stored secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool

from postroom.providers.health import DEGRADED_SHARE, DOWN_AFTER_FAILURES
from postroom.providers.registry import USER_TYPES
from postroom.schemas.base import NOT_COERCED, ApiModel, PublicModel
from postroom.schemas.email import EmailRecipient, EmailSender, HeaderText

ProviderName = Annotated[HeaderText, Field(min_length=1, max_length=255)]
Priority = Annotated[
    int, Field(ge=0, le=1_000_000, description="Higher is tried first."), NOT_COERCED
]

HEALTH_RULES = (
    "down: the latest evidence is failure - at least "
    f"{DOWN_AFTER_FAILURES} failed sends in the last 5 minutes (or a refused login) with "
    "nothing sent since, or a failed check with nothing sent since; degraded: a limit is "
    "reached, the provider throttled sends, or at least "
    f"{DEGRADED_SHARE:.0%} of the sends in the last 5 minutes failed; healthy otherwise. "
    "Counted over every worker process."
)
LIMITS_DOC = (
    'Cluster-wide limits, all optional: {"rateLimit": messages per "rateDelta" ms '
    '(default 1000), "hourly": per UTC hour, "daily": per UTC day, "maxMessageBytes", '
    '"attachments": false to refuse attachments, "maxRecipients"}.'
)
MONITORING_DOC = (
    'Circuit breaker and checks, all optional: {"failureThreshold": 5, '
    '"errorRateThreshold": 0.5, "minRequests": 20, "windowMs": 60000, "cooldownMs": 30000, '
    '"maxCooldownMs": 300000, "checkIntervalMs": 300000 (0: no periodic checks)}.'
)


#: ``type``: the OpenAPI enum lists what users may create; the service refuses anything
#: else with a 422 that names the known types
ProviderTypeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=50,
        description=", ".join(USER_TYPES) + ".",
        json_schema_extra={"enum": list(USER_TYPES)},
    ),
]


class ProviderCreate(ApiModel):
    name: ProviderName
    type: ProviderTypeName
    enabled: StrictBool = True
    priority: Priority = 100
    config: dict[str, Any] = Field(default_factory=dict, description="Non-secret settings.")
    limits: dict[str, Any] = Field(default_factory=dict, description=LIMITS_DOC)
    authentication: dict[str, Any] = Field(
        default_factory=dict, description="Credentials; stored encrypted, shown masked."
    )
    encryption: dict[str, Any] = Field(default_factory=dict)
    monitoring: dict[str, Any] = Field(default_factory=dict, description=MONITORING_DOC)


class ProviderUpdate(ApiModel):
    """Only the fields given change; ``authentication`` is replaced as a whole, except
    that values sent back masked keep their stored secret."""

    name: ProviderName | None = None
    type: ProviderTypeName | None = None
    enabled: StrictBool | None = None
    priority: Priority | None = None
    config: dict[str, Any] | None = None
    limits: dict[str, Any] | None = Field(default=None, description=LIMITS_DOC)
    authentication: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    monitoring: dict[str, Any] | None = Field(default=None, description=MONITORING_DOC)


class CheckPublic(PublicModel):
    checked_at: datetime
    ok: bool
    latency_ms: float | None = None
    detail: str = ""


class LimitUsage(PublicModel):
    kind: Literal["rate", "hourly", "daily"]
    limit: int
    used: int = Field(description="Messages sent in the current window, by every worker.")
    reserved: int = Field(
        description="Slots reserved in the current window (what the limit is enforced on): "
        "workers reserve a few at a time, so this runs ahead of used."
    )
    window_ms: int
    resets_at: datetime


class ProviderHealth(PublicModel):
    status: Literal["healthy", "degraded", "down"] = Field(description=HEALTH_RULES)
    reason: str
    sent_last_hour: int = 0
    failed_last_hour: int = Field(default=0, description="Failures that count against health.")
    throttled_last_hour: int = 0
    rejected_last_hour: int = Field(default=0, description="Messages refused for good.")
    latency_ms: float | None = Field(
        default=None, description="Mean send time over the last hour (else the last check's)."
    )
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    last_check: CheckPublic | None = None
    limits: list[LimitUsage] = Field(default_factory=list)


class ProviderPublic(PublicModel):
    id: str
    name: str
    type: str
    enabled: bool
    priority: int
    config: dict[str, Any]
    limits: dict[str, Any]
    authentication: dict[str, Any] = Field(
        description="Masked: '****'; API keys show at most their last 4 characters."
    )
    encryption: dict[str, Any]
    monitoring: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    health: ProviderHealth
    guardrail_trip: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Why and when the provider guardrail last disabled it (`at`, `reason`, "
            "`bounceRate`, `complaintRate`, `sends`); it stays disabled until enabled again."
        ),
    )


class ProviderList(PublicModel):
    providers: list[ProviderPublic]


class ProviderTestResult(PublicModel):
    """What ``check()`` found: connect and authenticate, no mail sent."""

    provider_id: str
    provider: str
    ok: bool
    latency_ms: float | None = None
    detail: str = ""
    checked_at: datetime


class TestEmailRequest(ApiModel):
    #: the same shape as ``EmailRequest.to`` and ``from``
    to: Annotated[list[EmailRecipient], Field(min_length=1, max_length=50)]
    provider_id: str | None = Field(
        default=None,
        description="A provider's id or name; default: the provider mail would go to first.",
    )
    from_: EmailSender | None = Field(
        default=None, alias="from", description="Default: POSTROOM_DEFAULT_FROM."
    )
    subject: Annotated[HeaderText, Field(max_length=500)] = "Postroom test email"


class TestEmailError(PublicModel):
    code: str
    message: str


class TestEmailAttempt(PublicModel):
    """One provider's answer to the test message."""

    provider_id: str
    provider: str
    ok: bool
    message_id: str
    provider_message_id: str | None = None
    response: str | None = None
    latency_ms: float | None = None
    error: TestEmailError | None = None


class TestEmailResult(PublicModel):
    """The answer to a test message sent at once (not queued, not tracked): the last
    provider tried, and in ``attempts`` every provider tried, in order."""

    ok: bool
    provider_id: str
    provider: str
    message_id: str
    provider_message_id: str | None = None
    response: str | None = None
    latency_ms: float | None = None
    error: TestEmailError | None = None
    attempts: list[TestEmailAttempt] = Field(default_factory=list)
