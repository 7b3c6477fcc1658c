"""A circuit breaker per provider, so a failing provider stops getting traffic.

::

    closed ──(N consecutive failures, or a high error rate, or an auth error)──► open
    open ──(cool-down over)──► half-open: check() first, then one real message
    half-open ──(the message goes through)──► closed
    half-open ──(the check or the message fails)──► open, with the cool-down doubled

A provider's ``check()`` must pass before a real message is risked on it, so an
outage that refuses connections or logins costs no message an attempt after the
breaker opened. Permanent rejections (a bad address) say nothing about the
provider's health: they count as the provider answering.

The state is kept per process: each worker learns about a failing provider from
its own sends, within ``failure_threshold`` of them, at once when the provider
cannot be reached at all, and from what the other processes found: the router
opens the breaker (:meth:`CircuitBreaker.seen_down`) when the cluster-wide health
in the database (``providers.health``) says the provider is down.
The time is the injected clock's, so tests move it instead of sleeping.

The thresholds can be tuned per provider in its ``monitoring`` JSON: ``failureThreshold``,
``errorRateThreshold``, ``minRequests``, ``windowMs``, ``cooldownMs``, ``maxCooldownMs``
(the spec's milliseconds), ``checkIntervalMs`` (periodic health checks; 0 = none) and
``slotWaitMs`` (how long a send waits for a free connection, ``providers.slots``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from postroom.errors import ConfigError

State = Literal["closed", "open", "half-open"]
#: the error-rate window is counted in this many buckets
_BUCKETS = 6


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerSettings:
    #: consecutive failures that open the breaker
    failure_threshold: int = 5
    #: ... or this share of failures in ``window_s``, once there were ``min_requests``
    error_rate: float = 0.5
    min_requests: int = 20
    window_s: float = 60.0
    #: open -> half-open after this long; doubled after each failed probe, up to the max
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    #: a probe that never reports back (its worker was stopped) frees the slot after this
    probe_timeout_s: float = 120.0
    #: periodic ``check()`` of the provider by the workers, cluster-wide; 0: never
    check_interval_s: float = 300.0
    #: a send waits this long for one of the provider's connections (``providers.slots``)
    slot_wait_s: float = 10.0

    @classmethod
    def from_monitoring(cls, raw: Mapping[str, Any] | None) -> BreakerSettings:
        """Settings from a provider's ``monitoring`` JSON; ConfigError names a bad key."""
        raw = raw or {}
        values: dict[str, Any] = {}
        for key, attr, minimum, scale in _MONITORING_KEYS:
            value = raw.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                raise ConfigError(
                    f"monitoring.{key} must be a number >= {minimum:g}, not {value!r}",
                    field=f"monitoring.{key}",
                )
            values[attr] = int(value) if attr in _WHOLE else value * scale
        if values.get("error_rate", 0.0) > 1.0:
            raise ConfigError(
                "monitoring.errorRateThreshold is a share between 0 and 1",
                field="monitoring.errorRateThreshold",
            )
        check = values.get("check_interval_s")
        if check is not None and 0 < check < 10:
            raise ConfigError(
                "monitoring.checkIntervalMs must be 0 (off) or at least 10000",
                field="monitoring.checkIntervalMs",
            )
        settings = cls(**values)
        if settings.max_cooldown_s < settings.cooldown_s:
            return cls(**{**values, "max_cooldown_s": settings.cooldown_s})
        return settings


#: (JSON key, attribute, minimum, scale to the attribute's unit)
_MONITORING_KEYS = (
    ("failureThreshold", "failure_threshold", 1, 1.0),
    ("errorRateThreshold", "error_rate", 0.01, 1.0),
    ("minRequests", "min_requests", 1, 1.0),
    ("windowMs", "window_s", 1000, 0.001),
    ("cooldownMs", "cooldown_s", 100, 0.001),
    ("maxCooldownMs", "max_cooldown_s", 100, 0.001),
    ("checkIntervalMs", "check_interval_s", 0, 0.001),
    ("slotWaitMs", "slot_wait_s", 10, 0.001),
)
_WHOLE = frozenset({"failure_threshold", "min_requests"})


class CircuitBreaker:
    """One provider's breaker in this process."""

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self.state: State = "closed"
        self.consecutive_failures = 0
        #: when the open breaker may be tried again
        self.retry_at: datetime | None = None
        #: half-open: the check passed (a real message may be tried)
        self.checked = False
        #: half-open: when the check, or after it the probe message, started
        self.probe_since: datetime | None = None
        self._cooldown_s = self.settings.cooldown_s
        #: (bucket number, successes, failures), oldest first
        self._buckets: deque[list[int]] = deque()

    # -- asking --------------------------------------------------------------------

    def gate(self, now: datetime) -> Literal["pass", "check", "probe", "wait"]:
        """May a message go to the provider now?

        ``pass``: closed. ``check``: run ``check()`` and report it with
        :meth:`checked_result` before anything is sent. ``probe``: the one message
        of a half-open breaker (call :meth:`dispatched` when it goes). ``wait``:
        not before :meth:`wait_until`.
        """
        if self.state == "closed":
            return "pass"
        if self.state == "open":
            if self.retry_at is not None and now < self.retry_at:
                return "wait"
            self.state, self.checked, self.probe_since = "half-open", False, None
        # one check, then one probe, at a time; either frees its turn if never reported
        timeout = timedelta(seconds=self.settings.probe_timeout_s)
        if self.probe_since is not None and now < self.probe_since + timeout:
            return "wait"
        if not self.checked:
            self.probe_since = now
            return "check"
        return "probe"

    def wait_until(self, now: datetime) -> datetime:
        if self.state == "open" and self.retry_at is not None:
            return self.retry_at
        return now + timedelta(seconds=min(5.0, self.settings.cooldown_s))

    # -- telling -------------------------------------------------------------------

    def checked_result(self, ok: bool, now: datetime) -> None:
        """The outcome of the check a ``check`` gate asked for."""
        if self.state != "half-open":
            return
        if ok:
            self.checked, self.probe_since = True, None
        else:
            self._open(now, backoff=True)

    def dispatched(self, now: datetime) -> None:
        """The half-open probe message is on its way."""
        self.probe_since = now

    def withdrawn(self) -> None:
        """The half-open probe message never went out (no connection was free): the
        next message may probe instead."""
        if self.state == "half-open" and self.checked:
            self.probe_since = None

    def success(self, now: datetime) -> None:
        self._count(now, failed=False)
        self.consecutive_failures = 0
        if self.state == "half-open":
            self._close()

    def failure(self, now: datetime) -> None:
        self._count(now, failed=True)
        self.consecutive_failures += 1
        if self.state == "half-open":
            self._open(now, backoff=True)
        elif self.state == "closed" and (
            self.consecutive_failures >= self.settings.failure_threshold or self._error_rate_high()
        ):
            self._open(now, backoff=False)

    def seen_down(self, at: datetime) -> bool:
        """Another process, or a periodic check, found the provider down at ``at``: a
        closed breaker opens as if it had seen it then (the cool-down runs from ``at``,
        so old news goes straight to a check); True if it opened."""
        if self.state != "closed":
            return False
        self._open(at, backoff=False)
        return True

    def trip(self, now: datetime) -> None:
        """Open at once (the credentials were refused)."""
        self._count(now, failed=True)
        self.consecutive_failures += 1
        if self.state != "open":
            self._open(now, backoff=self.state == "half-open")

    # -- inside --------------------------------------------------------------------

    def _open(self, now: datetime, *, backoff: bool) -> None:
        if backoff:
            self._cooldown_s = min(self._cooldown_s * 2, self.settings.max_cooldown_s)
        self.state, self.checked, self.probe_since = "open", False, None
        self.retry_at = now + timedelta(seconds=self._cooldown_s)

    def _close(self) -> None:
        self.state, self.checked, self.probe_since, self.retry_at = "closed", False, None, None
        self.consecutive_failures = 0
        self._cooldown_s = self.settings.cooldown_s
        self._buckets.clear()

    def _count(self, now: datetime, *, failed: bool) -> None:
        width = self.settings.window_s / _BUCKETS
        bucket = int(now.timestamp() // width)
        if not self._buckets or self._buckets[-1][0] != bucket:
            self._buckets.append([bucket, 0, 0])
        self._buckets[-1][2 if failed else 1] += 1
        while self._buckets and self._buckets[0][0] <= bucket - _BUCKETS:
            self._buckets.popleft()

    def _error_rate_high(self) -> bool:
        ok = sum(b[1] for b in self._buckets)
        bad = sum(b[2] for b in self._buckets)
        total = ok + bad
        return total >= self.settings.min_requests and bad / total >= self.settings.error_rate
