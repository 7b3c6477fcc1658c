"""What every HTTP adapter must do, whatever its API: the shared contract cases.

Each ``test_<esp>.py`` subclasses :class:`HTTPProviderContract`, naming its fake
server fixture and how to build its spec; the cases here then run for that ESP.
Bodies are deliberately not in the ESP's own error format: an adapter must still
classify by the HTTP status when the body is not what it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from postroom.errors import ProviderTimeout, ProviderTransientError
from postroom.providers import registry
from postroom.providers.base import OutgoingMessage, ProviderSpec
from postroom.providers.registry import ProviderContext
from tests.providers.fake_esp import FakeESP


class HTTPProviderContract:
    #: the name of the module's fake-server fixture
    esp_fixture: ClassVar[str]
    #: ``spec_for(esp, **config)`` of the module
    spec_for: ClassVar[Callable[..., ProviderSpec]]

    @pytest.fixture
    def esp(self, request: pytest.FixtureRequest) -> FakeESP:
        return request.getfixturevalue(self.esp_fixture)  # type: ignore[no-any-return]

    async def _send(
        self, esp: FakeESP, context: ProviderContext, message: OutgoingMessage, **config: Any
    ) -> None:
        provider = registry.build(type(self).spec_for(esp, **config), context)
        try:
            await provider.send(message)
        finally:
            await provider.aclose()

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_contract_5xx_is_transient(
        self, esp: FakeESP, provider_context: ProviderContext, outgoing: OutgoingMessage,
        status: int,
    ) -> None:  # fmt: skip
        esp.script(status, body=b"Service Unavailable")
        with pytest.raises(ProviderTransientError) as info:
            await self._send(esp, provider_context, outgoing)
        assert info.value.retryable

    async def test_contract_429_honours_retry_after(
        self, esp: FakeESP, provider_context: ProviderContext, outgoing: OutgoingMessage
    ) -> None:
        esp.script(429, body=b"slow down", headers={"Retry-After": "9"})
        with pytest.raises(ProviderTransientError) as info:
            await self._send(esp, provider_context, outgoing)
        assert info.value.retry_after == 9.0

    async def test_contract_no_answer_is_a_timeout(
        self, esp: FakeESP, provider_context: ProviderContext, outgoing: OutgoingMessage
    ) -> None:
        esp.script(200, hang=True)
        with pytest.raises(ProviderTimeout):
            await self._send(esp, provider_context, outgoing, socketTimeout=250)
