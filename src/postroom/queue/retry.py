"""The retry policy: pure functions, no I/O, no clock.

The spec's backoff is ``2^attempts`` seconds after the attempt that failed. Each
queue scales it by its ``retry.baseDelaySeconds`` (default 30 s: a transient
failure is retried over minutes, as MTAs do, not within seconds; ``1`` is the
spec's schedule) and caps it at ``retry.maxDelaySeconds``. A jitter of up to
+25 % spreads retries of a burst that failed together. A provider's
``Retry-After`` wins when it asks for longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from postroom.errors import PostroomError, ProviderError

if TYPE_CHECKING:
    from postroom.config import Settings


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 3600.0
    #: upper bound of the random extra delay, as a fraction of the delay
    jitter: float = 0.25
    #: ceiling on how long a provider's Retry-After may postpone a job
    max_retry_after_s: float = 86_400.0

    def backoff(self, attempts: int, *, rand: float | None = None) -> float:
        """Seconds to wait after attempt number ``attempts`` (1-based) failed."""
        r = random.random() if rand is None else rand
        delay = min(self.cap_s, self.base_s * 2.0 ** max(attempts, 0))
        return min(self.cap_s, delay * (1.0 + self.jitter * r))

    def decide(
        self, *, attempts: int, max_attempts: int, error: BaseException, rand: float | None = None
    ) -> tuple[Literal["retry", "failed"], float]:
        """Retry (and after how many seconds) or fail, for an attempt that raised ``error``."""
        if isinstance(error, PostroomError) and not isinstance(error, ProviderError):
            return "failed", 0.0  # the message itself is wrong: retrying will not help
        if isinstance(error, ProviderError) and not error.retryable:
            return "failed", 0.0
        if attempts >= max_attempts:
            return "failed", 0.0
        delay = self.backoff(attempts, rand=rand)
        if isinstance(error, ProviderError) and error.retry_after:
            delay = max(delay, min(error.retry_after, self.max_retry_after_s))
        return "retry", delay


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryConfig:
    """A queue's ``retry`` JSON (the spec's ``RetryConfig``): attempts and backoff."""

    max_attempts: int = 5
    base_s: float = 30.0
    cap_s: float = 3600.0

    #: the JSON keys, with the attribute each sets and its bounds
    KEYS: ClassVar[dict[str, tuple[str, float, float]]] = {
        "maxAttempts": ("max_attempts", 1, 100),
        "baseDelaySeconds": ("base_s", 0.001, 86_400),
        "maxDelaySeconds": ("cap_s", 0.001, 7 * 86_400),
    }

    @classmethod
    def from_json(cls, raw: Any, *, defaults: RetryConfig) -> RetryConfig:
        """``raw`` over ``defaults``; a missing or invalid key keeps its default, so a
        hand-edited row cannot stop a worker."""
        values: dict[str, Any] = {}
        for key, (attr, low, high) in cls.KEYS.items():
            value = raw.get(key) if isinstance(raw, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                if low <= value <= high:
                    values[attr] = int(value) if attr == "max_attempts" else float(value)
        return replace(defaults, **values)

    def to_json(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "backoff": "exponential",
            "baseDelaySeconds": self.base_s,
            "maxDelaySeconds": self.cap_s,
        }

    def policy(self) -> RetryPolicy:
        return RetryPolicy(base_s=self.base_s, cap_s=self.cap_s)

    def schedule(self) -> list[float]:
        """Seconds after the first attempt at which each later one is due (no jitter)."""
        policy, total, out = self.policy(), 0.0, []
        for attempt in range(1, self.max_attempts):
            total += policy.backoff(attempt, rand=0.0)
            out.append(round(total, 3))
        return out


def default_retry(settings: Settings) -> RetryConfig:
    """The retry config of a queue that does not say: POSTROOM_MAX_ATTEMPTS,
    POSTROOM_RETRY_BASE_DELAY_S and POSTROOM_RETRY_MAX_BACKOFF_S."""
    return RetryConfig(
        max_attempts=settings.max_attempts,
        base_s=settings.retry_base_delay_s,
        cap_s=settings.retry_max_backoff_s,
    )
