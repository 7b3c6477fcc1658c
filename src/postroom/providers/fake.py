"""A scripted provider for tests and demos: it keeps what it "sends" in memory.

``config.script`` lists outcomes consumed one per send: ``"ok"``, ``"transient"``,
``"rejected"``, ``"auth"``, ``"timeout"`` or ``"hang"`` (wait until ``release`` is
set, then succeed); once the script is used up every send succeeds.
``config.retryAfter`` sets the ``retry_after`` of transient failures.
Internal: tests insert it directly; the API and the CLI do not offer it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import ClassVar

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
)
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.registry import ProviderContext

_ERRORS: dict[str, type[ProviderError]] = {
    "transient": ProviderTransientError,
    "rejected": ProviderRejected,
    "auth": ProviderAuthError,
    "timeout": ProviderTimeout,
}


class FakeProvider:
    type: ClassVar[str] = "fake"
    config_keys: ClassVar[frozenset[str]] = frozenset({"script", "retryAfter"})
    authentication_keys: ClassVar[frozenset[str]] = frozenset({"apiKey"})
    url_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, *, name: str, script: list[str] | None = None, retry_after: float | None = None
    ) -> None:
        self.name = name
        self.script = deque(script or ())
        self.retry_after = retry_after
        self.sent: list[OutgoingMessage] = []
        #: set it to let sends scripted to ``"hang"`` finish
        self.release = asyncio.Event()
        #: set when a send starts hanging
        self.hanging = asyncio.Event()
        self.calls = 0
        self.closed = False

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> FakeProvider:
        return cls(
            name=spec.name,
            script=list(spec.config.get("script") or ()),
            retry_after=spec.config.get("retryAfter"),
        )

    async def send(self, message: OutgoingMessage) -> SendResult:
        self.calls += 1
        step = self.script.popleft() if self.script else "ok"
        if step == "hang":
            self.hanging.set()
            await self.release.wait()
        elif step != "ok":
            error = _ERRORS[step]
            raise error(
                f"scripted {step} failure",
                provider=self.name,
                status=step,
                retry_after=self.retry_after if step == "transient" else None,
            )
        self.sent.append(message)
        return SendResult(provider=self.name, provider_message_id=f"fake-{len(self.sent)}")

    async def check(self) -> HealthResult:
        return HealthResult(ok=True, latency_ms=0.0, detail="fake")

    async def aclose(self) -> None:
        self.closed = True
