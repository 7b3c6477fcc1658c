"""What the queue endpoints answer: the spec's ``QueueStatus``, ``QueueStats`` and
``QueueProcessor``, plus the result of retrying failed jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from postroom.queue.retry import RetryConfig
from postroom.schemas.base import PublicModel
from postroom.types import ProcessorStatus

QueueHealth = Literal["healthy", "backlogged", "failing"]

#: health rules (applied by ``services.queues.health``, documented in the API schema):
#: "failing" needs at least this many failures in the last 24 hours ...
FAILING_MIN_FAILED = 3
#: ... making up at least this share of the jobs finished in that time
FAILING_RATIO = 0.5
#: "backlogged": a job that is due has waited longer than this
BACKLOG_AGE_S = 300
HEALTH_RULES = (
    f"failing: at least {FAILING_MIN_FAILED} jobs failed in the last 24 hours and they are "
    f"at least {FAILING_RATIO:.0%} of the jobs finished in that time; backlogged: a due job "
    f"has waited more than {BACKLOG_AGE_S // 60} minutes; healthy otherwise. "
    "Failing is reported before backlogged."
)


class QueueRetry(PublicModel):
    """A queue's ``retry`` config (the spec's ``RetryConfig``), as it takes effect."""

    max_attempts: int = Field(ge=1, le=100, description="Attempts per message (default 5).")
    backoff: Literal["exponential"] = Field(
        default="exponential",
        description="After attempt n fails, the next is due baseDelaySeconds * 2^n later.",
    )
    base_delay_seconds: float = Field(gt=0, description="Backoff base (default 30).")
    max_delay_seconds: float = Field(gt=0, description="Longest wait between attempts (3600).")
    schedule: list[float] = Field(
        default_factory=list,
        description="Seconds after the first attempt at which each further attempt is "
        "due, before jitter (up to +25 %) and any longer Retry-After.",
    )

    @classmethod
    def of(cls, config: RetryConfig) -> QueueRetry:
        return cls(
            max_attempts=config.max_attempts,
            base_delay_seconds=config.base_s,
            max_delay_seconds=config.cap_s,
            schedule=config.schedule(),
        )


class QueueStats(PublicModel):
    pending: int = Field(description="Jobs waiting, including those scheduled for later.")
    processing: int = Field(description="Jobs leased by a worker right now.")
    completed: int = Field(description="Jobs handed to a provider in the last 24 hours.")
    failed: int = Field(description="Jobs that failed for good in the last 24 hours.")
    total_processed: int = Field(description="completed + failed (last 24 hours).")
    average_processing_time: float = Field(
        description="Mean duration of successful send attempts in the last 24 hours, in ms."
    )
    throughput: float = Field(
        description="Jobs completed in the last hour, in messages per minute."
    )


class QueueProcessor(PublicModel):
    queue_id: str
    status: ProcessorStatus = Field(
        description="stopped (queue disabled), paused, processing (jobs leased) or idle."
    )
    concurrency: int = Field(description="Concurrent sends per worker for this queue.")
    active_jobs: int = Field(description="Jobs being sent right now.")
    processed_jobs: int = Field(description="Jobs completed in the last 24 hours.")
    failed_jobs: int = Field(description="Jobs failed in the last 24 hours.")
    error_rate: float = Field(description="failed / (completed + failed), last 24 hours, 0..1.")
    last_processed_at: datetime | None = Field(
        default=None, description="When a send attempt last finished (within 24 hours)."
    )


class QueueStatus(PublicModel):
    id: str
    name: str
    type: str
    priority: str
    enabled: bool = Field(description="A disabled queue refuses new mail.")
    paused: bool = Field(description="A paused queue accepts mail but workers claim none of it.")
    stats: QueueStats
    health: QueueHealth = Field(description=HEALTH_RULES)
    processor: QueueProcessor
    retry: QueueRetry
    guardrail_trip: dict[str, Any] | None = Field(
        default=None,
        description="The guardrail's last pause of this queue: at, reason, rates, sends.",
    )


class QueueList(PublicModel):
    queues: list[QueueStatus]


class RetryResult(PublicModel):
    queue_id: str
    retried: int = Field(description="Failed jobs moved back to pending with a fresh budget.")
