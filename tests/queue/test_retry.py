"""The retry policy: the spec's 2^attempts backoff, capped, with bounded jitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.errors import (
    InvalidAddress,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
)
from postroom.queue.retry import RetryPolicy


@given(
    attempts=st.integers(min_value=0, max_value=200),
    rand=st.floats(min_value=0.0, max_value=1.0),
    cap=st.floats(min_value=1.0, max_value=100_000.0),
)
def test_backoff_is_exponential_jittered_and_capped(attempts: int, rand: float, cap: float) -> None:
    policy = RetryPolicy(cap_s=cap)
    delay = policy.backoff(attempts, rand=rand)
    exact = min(cap, 2.0**attempts)
    assert exact <= delay + 1e-9
    assert delay <= min(cap, exact * 1.25) + 1e-9


@given(attempts=st.integers(min_value=0, max_value=50))
def test_backoff_never_shrinks_as_attempts_grow(attempts: int) -> None:
    policy = RetryPolicy()
    assert policy.backoff(attempts, rand=0.0) <= policy.backoff(attempts + 1, rand=0.0)


def test_spec_values_without_jitter() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(a, rand=0.0) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_transient_errors_retry_until_the_budget_is_spent() -> None:
    policy = RetryPolicy()
    error = ProviderTransientError("451 try later")
    assert policy.decide(attempts=1, max_attempts=3, error=error, rand=0.0) == ("retry", 2.0)
    assert policy.decide(attempts=2, max_attempts=3, error=error, rand=0.0) == ("retry", 4.0)
    assert policy.decide(attempts=3, max_attempts=3, error=error)[0] == "failed"


def test_permanent_errors_fail_at_once() -> None:
    policy = RetryPolicy()
    for error in (ProviderRejected("550 no such user"), InvalidAddress("bad")):
        assert policy.decide(attempts=1, max_attempts=5, error=error)[0] == "failed"


def test_auth_errors_and_timeouts_retry() -> None:
    policy = RetryPolicy()
    for error in (ProviderAuthError("535"), ProviderTimeout("slow")):
        assert policy.decide(attempts=1, max_attempts=5, error=error)[0] == "retry"


def test_retry_after_wins_when_longer_and_is_bounded() -> None:
    policy = RetryPolicy(max_retry_after_s=600)
    slow = ProviderTransientError("429", retry_after=120)
    assert policy.decide(attempts=1, max_attempts=5, error=slow, rand=0.0) == ("retry", 120)
    huge = ProviderTransientError("429", retry_after=10**9)
    assert policy.decide(attempts=1, max_attempts=5, error=huge, rand=0.0) == ("retry", 600)
    short = ProviderTransientError("429", retry_after=0.5)
    assert policy.decide(attempts=3, max_attempts=5, error=short, rand=0.0) == ("retry", 8.0)


def test_unknown_exceptions_are_retried_within_the_budget() -> None:
    policy = RetryPolicy()
    assert policy.decide(attempts=1, max_attempts=3, error=RuntimeError("boom"))[0] == "retry"
    assert policy.decide(attempts=3, max_attempts=3, error=RuntimeError("boom"))[0] == "failed"
