"""When a failed webhook POST is tried again, and when it is given up: pure, no I/O.

Attempt ``n`` that fails (no answer, or an answer other than 2xx) is retried after
``BASE_S * FACTOR^(n-1)`` seconds, capped at ``CAP_S``: 5 s, 20 s, 80 s, 320 s,
1280 s (21 min), 5120 s (85 min), 7200 s (2 h). After ``MAX_ATTEMPTS`` (8) POSTs,
about 3.9 hours after the first, the delivery is ``failed``; ``POST
…/deliveries/{id}/retry`` gives it a fresh budget.
"""

from __future__ import annotations

MAX_ATTEMPTS = 8
BASE_S = 5.0
FACTOR = 4.0
CAP_S = 7200.0


def delay_s(attempt: int) -> float:
    """Seconds to wait after attempt number ``attempt`` (1-based) failed."""
    return min(CAP_S, BASE_S * FACTOR ** max(attempt - 1, 0))


def gives_up(attempt: int, max_attempts: int) -> bool:
    """Whether a failed attempt ``attempt`` was the last one allowed."""
    return attempt >= max_attempts
