"""The shared base of the HTTP provider adapters.

Each ESP adapter owns long-lived ``httpx.AsyncClient`` s with connect and socket
timeouts, one per request in flight (``egress.ClientPerRequest``: each a keep-alive
connection the next request reuses), and sends every request through
:meth:`HTTPProvider.request`, so vendor errors are translated in exactly one place:
a connection that cannot be opened becomes :class:`ProviderUnavailable` (nothing was
sent), other timeouts :class:`ProviderTimeout`, dropped connections
:class:`ProviderTransientError`, and non-2xx answers go through :meth:`classify`
(by default :func:`postroom.providers.classify.classify_http`; adapters whose ESP
puts the real reason in the body override it).

Every connection goes through the SSRF guard of :mod:`postroom.providers.egress`
(resolve, refuse non-public addresses outside ``allowNetworks``, connect to the
checked address), whatever the adapter.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from postroom.errors import (
    ConfigError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
    ProviderUnavailable,
)
from postroom.providers.base import HealthResult, ProviderSpec
from postroom.providers.classify import classify_http
from postroom.providers.egress import (
    AddressGuard,
    ClientPerRequest,
    IPNetwork,
    Resolver,
    parse_networks,
    resolve_host,
)

__all__ = [
    "HTTP_CONFIG_KEYS",
    "HTTPOptions",
    "HTTPProvider",
    "b64",
    "excerpt",
    "json_body",
    "require",
]

#: ``config`` keys every HTTP provider accepts besides its own
HTTP_CONFIG_KEYS = frozenset(
    {"connectionTimeout", "socketTimeout", "maxConnections", "allowNetworks"}
)

#: characters of a response body kept in errors and results
EXCERPT_CHARS = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class HTTPOptions:
    """Client tunables, read from a provider's config (times in ms there, as in the spec)."""

    connect_timeout_s: float = 10.0
    socket_timeout_s: float = 30.0
    max_connections: int = 10
    #: networks the SSRF guard lets through although they are not public
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> HTTPOptions:
        """``connectionTimeout`` / ``socketTimeout`` (ms), ``maxConnections`` and
        ``allowNetworks``."""
        config = spec.config
        try:
            allow = parse_networks(config.get("allowNetworks"))
        except ConfigError as exc:
            raise ConfigError(f"provider {spec.name!r}: {exc.message}", **exc.context) from exc
        try:
            return cls(
                connect_timeout_s=float(config.get("connectionTimeout", 10_000)) / 1000,
                socket_timeout_s=float(config.get("socketTimeout", 30_000)) / 1000,
                max_connections=int(config.get("maxConnections", 10)),
                allow_networks=allow,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"provider {spec.name!r}: invalid HTTP client setting: {exc}"
            ) from exc

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.socket_timeout_s, connect=self.connect_timeout_s)


class HTTPProvider:
    """Base of the HTTP adapters: client lifecycle, error translation, health probes."""

    type: ClassVar[str]

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        options: HTTPOptions | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        resolver: Resolver = resolve_host,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        options = options or HTTPOptions()
        #: requests in flight at most (the router's connection slots)
        self.pool_size = options.max_connections
        self.guard = AddressGuard(provider=name, allow=options.allow_networks, resolver=resolver)
        #: at most ``pool_size`` requests are in flight (the router's slots), so at
        #: most that many clients, one connection each
        self._clients = ClientPerRequest(
            self.guard,
            verify=verify,
            base_url=self.base_url,
            headers={"User-Agent": "postroom", **(headers or {})},
            auth=auth,
            timeout=options.timeout(),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._clients.aclose()

    @contextmanager
    def translate_errors(self, action: str) -> Iterator[None]:
        """Turn httpx exceptions raised inside the block into Postroom errors."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # the request never left: nothing was sent, so this is not an attempt
            raise ProviderUnavailable(
                f"{self.name}: cannot reach {self.base_url}: {type(exc).__name__}: {exc}",
                provider=self.name,
                busy=isinstance(exc, httpx.PoolTimeout),
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"{self.name}: {action} timed out ({type(exc).__name__})", provider=self.name
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ConfigError(f"provider {self.name!r}: bad URL: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderTransientError(
                f"{self.name}: {action} failed: {type(exc).__name__}: {exc}", provider=self.name
            ) from exc

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; a non-2xx answer raises what :meth:`classify` returns."""
        # the query is left out of messages: a custom URL may carry a token there
        action = f"{method} {url.partition('?')[0]}"
        with self.translate_errors(action), self._clients.client() as client:
            response = await client.request(method, url, **kwargs)
        if not response.is_success:
            raise self.classify(response)
        return response

    def classify(self, response: httpx.Response) -> ProviderError:
        """The error for a non-2xx answer; adapters refine it from the ESP's body."""
        error = classify_http(self.name, response.status_code, response.headers, excerpt(response))
        if error is None:  # a 1xx/3xx the classifier accepts is still not a send
            error = ProviderRejected(
                f"{self.name}: unexpected HTTP {response.status_code}",
                provider=self.name,
                status=response.status_code,
                response_excerpt=excerpt(response),
            )
        return error

    async def probe(self, method: str, url: str, **kwargs: Any) -> tuple[HealthResult, Any]:
        """Time one authenticated request; returns the health result and the parsed JSON."""
        start = time.perf_counter()
        try:
            response = await self.request(method, url, **kwargs)
        except (ProviderError, ConfigError) as exc:
            latency = (time.perf_counter() - start) * 1000
            return HealthResult(ok=False, latency_ms=latency, detail=str(exc)), None
        latency = (time.perf_counter() - start) * 1000
        return HealthResult(ok=True, latency_ms=latency), json_body(response)


def excerpt(response: httpx.Response) -> str:
    """The start of a response body, for errors and logs."""
    try:
        return response.text[:EXCERPT_CHARS]
    except (UnicodeDecodeError, LookupError):
        return repr(response.content[:EXCERPT_CHARS])


def json_body(response: httpx.Response) -> Any:
    """The JSON body, or None when the body is empty or not JSON."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def b64(data: bytes) -> str:
    """Standard base64 as ASCII text, as every ESP wants attachment content."""
    return base64.b64encode(data).decode("ascii")


def require(spec: ProviderSpec, section: str, key: str) -> str:
    """A required, non-empty string from ``spec.config`` or ``spec.authentication``."""
    source: Mapping[str, Any] = spec.authentication if section == "authentication" else spec.config
    value = source.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"provider {spec.name!r} ({spec.type}): {section}.{key} is required")
    return value
