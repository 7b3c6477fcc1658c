"""The retry policy: pure functions, no I/O, no clock.

The spec's backoff is ``2^attempts`` seconds after the attempt that failed. A
jitter of up to +25 % spreads retries of a burst that failed together, and a cap
keeps late attempts from drifting days away. A provider's ``Retry-After`` wins
when it asks for longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from postroom.errors import PostroomError, ProviderError


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
