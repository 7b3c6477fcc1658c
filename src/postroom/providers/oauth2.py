"""OAuth2 access tokens for XOAUTH2: static, or refreshed at a token endpoint and cached.

The token endpoint receives the client secret and the refresh token, so its URL
goes through the same SSRF guard as every HTTP provider (``egress``): non-public
addresses are refused unless the SMTP provider's ``config.allowNetworks`` lists them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import httpx

from postroom.errors import ProviderAuthError
from postroom.providers.classify import classify_exception, classify_http
from postroom.providers.egress import (
    AddressGuard,
    GuardedTransport,
    IPNetwork,
    Resolver,
    resolve_host,
)
from postroom.providers.smtp_config import SMTPAuth


class OAuth2Tokens:
    """XOAUTH2 access tokens: static, or refreshed at the token endpoint and cached."""

    def __init__(
        self,
        auth: SMTPAuth,
        *,
        provider: str,
        timeout_s: float,
        allow_networks: Iterable[IPNetwork] = (),
        resolver: Resolver = resolve_host,
    ) -> None:
        self._auth = auth
        self._provider = provider
        self._timeout_s = timeout_s
        self._allow = tuple(allow_networks)
        self._resolver = resolver
        self._token = auth.access_token
        self._expires = float("inf") if auth.token_url is None else 0.0
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def get(self) -> str:
        token = self._token
        if token and time.monotonic() < self._expires:
            return token
        async with self._lock:  # one refresh for all connections opening at once
            token = self._token
            if not token or time.monotonic() >= self._expires:
                token, lifetime = await self._refresh()
                self._token = token
                self._expires = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return token

    def invalidate(self, token: str) -> None:
        """Forget a refused token, so the next connection fetches a fresh one."""
        if self._auth.token_url is not None and token == self._token:
            self._token = None

    async def _refresh(self) -> tuple[str, float]:
        auth = self._auth
        assert auth.token_url is not None
        if self._client is None:
            guard = AddressGuard(
                provider=self._provider, allow=self._allow, resolver=self._resolver
            )
            self._client = httpx.AsyncClient(
                timeout=self._timeout_s,
                transport=GuardedTransport(guard),
                follow_redirects=False,
                trust_env=False,
            )
        form = {
            "grant_type": "refresh_token",
            "client_id": auth.client_id or "",
            "client_secret": auth.client_secret or "",
            "refresh_token": auth.refresh_token or "",
        }
        try:
            response = await self._client.post(auth.token_url, data=form)
        except httpx.HTTPError as exc:
            raise classify_exception(self._provider, exc) from exc
        status, excerpt = response.status_code, response.text[:500]
        if status in (400, 401, 403):  # invalid_grant, invalid_client: the credentials
            raise ProviderAuthError(
                f"OAuth2 token refresh refused: HTTP {status}",
                provider=self._provider,
                status=status,
                response_excerpt=excerpt,
            )
        error = classify_http(self._provider, status, response.headers, excerpt)
        if error is not None:
            raise error
        try:
            payload = response.json()
            return str(payload["access_token"]), float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderAuthError(
                "OAuth2 token endpoint answered without an access_token",
                provider=self._provider,
                response_excerpt=excerpt,
            ) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
