"""SMTP relay adapter: a pool of long-lived aiosmtplib connections.

A pooled connection says EHLO, STARTTLS and AUTH once and then carries up to
``maxMessages`` messages, so each send costs only its MAIL, RCPT and DATA round
trips. Many tasks may call :meth:`SMTPProvider.send` at once: each takes one pool
slot, never a provider-wide lock. ``rateLimit`` only smooths this process's output;
cluster-wide limits are enforced through the database (DESIGN.md, "Limits").

TLS: ``secure`` is implicit TLS (port 465). Otherwise STARTTLS is used whenever the
server offers it, and ``requireTLS`` makes it mandatory. A server that does not
offer it then fails with ProviderTransientError and nothing is sent in clear: a
stripped STARTTLS cannot be told from a misconfigured relay, and a transient error
lets failover and the circuit breaker deal with either without failing the message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
)
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.classify import classify_exception, classify_http, classify_smtp
from postroom.providers.registry import ProviderContext

if TYPE_CHECKING:
    import httpx

__all__ = ["SMTPAuth", "SMTPProvider", "SMTPSettings"]

AuthMethod = Literal["plain", "login", "xoauth2"]
_AUTH_METHODS: dict[str, AuthMethod] = {
    "plain": "plain",
    "login": "login",
    "oauth2": "xoauth2",
    "xoauth2": "xoauth2",
}
#: QUIT and RSET are courtesies; never let them hold a pool slot for long
_COURTESY_TIMEOUT_S = 5.0


def _number(config: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"smtp: {key} must be a number >= {minimum:g}, not {value!r}")
    return float(value)


def _int(config: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = _number(config, key, default, minimum)
    if value != int(value):
        raise ConfigError(f"smtp: {key} must be a whole number, not {config[key]!r}")
    return int(value)


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"smtp: {key} must be true or false, not {value!r}")
    return value


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 for c in value):
        raise ConfigError(f"smtp: {key} must be a string without spaces or control characters")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class SMTPSettings:
    """Validated connection settings; the spec's milliseconds become seconds here."""

    host: str
    port: int
    secure: bool = False
    require_tls: bool = False
    #: never STARTTLS, even when offered (local relays, smtp-sink)
    ignore_tls: bool = False
    connection_timeout_s: float = 30.0
    greeting_timeout_s: float = 30.0
    #: per reply; for DATA this covers uploading the whole message
    socket_timeout_s: float = 120.0
    dns_timeout_s: float = 30.0
    max_connections: int = 5
    max_messages: int = 100
    #: messages per ``rate_delta_s`` in this process; 0 means unlimited
    rate_limit: int = 0
    rate_delta_s: float = 1.0
    tls_verify: bool = True
    #: CA bundle that replaces the system trust store
    ca_file: Path | None = None
    local_hostname: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: Path | None = None) -> SMTPSettings:
        """Settings from the spec's camelCase ``SMTPConfig``; ConfigError when invalid."""
        host = _text(config, "host")
        if host is None:
            raise ConfigError("smtp: host is required")
        secure = _flag(config, "secure", False)
        require_tls = _flag(config, "requireTLS", False)
        ignore_tls = _flag(config, "ignoreTLS", False)
        if require_tls and ignore_tls:
            raise ConfigError("smtp: requireTLS and ignoreTLS contradict each other")
        ca_file = _text(config, "caFile")
        ca_path = Path(ca_file) if ca_file else None
        if ca_path is not None and not ca_path.is_absolute() and base_dir is not None:
            ca_path = base_dir / ca_path
        return cls(
            host=host,
            port=_int(config, "port", 465 if secure else 587, 1),
            secure=secure,
            require_tls=require_tls,
            ignore_tls=ignore_tls,
            connection_timeout_s=_number(config, "connectionTimeout", 30_000, 1) / 1000,
            greeting_timeout_s=_number(config, "greetingTimeout", 30_000, 1) / 1000,
            socket_timeout_s=_number(config, "socketTimeout", 120_000, 1) / 1000,
            dns_timeout_s=_number(config, "dnsTimeout", 30_000, 1) / 1000,
            max_connections=_int(config, "maxConnections", 5, 1),
            max_messages=_int(config, "maxMessages", 100, 1),
            rate_limit=_int(config, "rateLimit", 0, 0),
            rate_delta_s=_number(config, "rateDelta", 1000, 1) / 1000,
            tls_verify=_flag(config, "tlsVerify", True),
            ca_file=ca_path,
            local_hostname=_text(config, "localHostname"),
        )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"smtp: port must be between 1 and 65535, not {self.port}")

    def tls_context(self) -> ssl.SSLContext:
        """One context for every connection, so CA files are read once."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smtp: cannot load caFile {self.ca_file}: {exc}") from exc
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, kw_only=True, slots=True)
class SMTPAuth:
    """Credentials; ``method=None`` lets the server's offer decide (CRAM-MD5, PLAIN, LOGIN)."""

    user: str
    password: str | None = field(default=None, repr=False)
    method: AuthMethod | None = None
    #: a static XOAUTH2 token, or the refresh-token grant below
    access_token: str | None = field(default=None, repr=False)
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, auth: Mapping[str, Any]) -> SMTPAuth | None:
        """Credentials from the spec's ``authentication``; None when there is no user."""
        user = auth.get("user")
        if not user:
            return None
        raw_method = auth.get("method")
        method = _AUTH_METHODS.get(str(raw_method).lower()) if raw_method else None
        if raw_method and method is None:
            known = ", ".join(_AUTH_METHODS)
            raise ConfigError(f"smtp: unknown auth method {raw_method!r} (known: {known})")
        fields = {
            key: auth.get(name) or None
            for key, name in (
                ("password", "password"),
                ("access_token", "accessToken"),
                ("token_url", "tokenUrl"),
                ("client_id", "clientId"),
                ("client_secret", "clientSecret"),
                ("refresh_token", "refreshToken"),
            )
        }
        if not all(isinstance(v, str | None) for v in (user, *fields.values())):
            raise ConfigError("smtp: authentication values must be strings")
        if method == "xoauth2":
            grant = ("token_url", "client_id", "client_secret", "refresh_token")
            if not fields["access_token"] and not all(fields[key] for key in grant):
                raise ConfigError(
                    "smtp: oauth2 needs accessToken, or tokenUrl, clientId, clientSecret "
                    "and refreshToken"
                )
        elif not fields["password"]:
            raise ConfigError("smtp: authentication.password is required")
        return cls(user=user, method=method, **fields)


class _Tokens:
    """XOAUTH2 access tokens: static, or refreshed at the token endpoint and cached."""

    def __init__(self, auth: SMTPAuth, *, provider: str, timeout_s: float) -> None:
        self._auth = auth
        self._provider = provider
        self._timeout_s = timeout_s
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
        import httpx

        auth = self._auth
        assert auth.token_url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
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


class _SlidingWindow:
    """At most ``limit`` sends start in any ``delta_s`` window of this process."""

    def __init__(self, limit: int, delta_s: float) -> None:
        self._delta_s = delta_s
        self._starts: deque[float] = deque(maxlen=limit)

    async def wait(self) -> None:
        now = time.monotonic()
        start = now
        if len(self._starts) == self._starts.maxlen:
            start = max(now, self._starts[0] + self._delta_s)
        self._starts.append(start)  # reserve the slot before sleeping
        if start > now:
            await asyncio.sleep(start - now)


class _Translate:
    """Raise Postroom errors for what aiosmtplib, sockets and TLS throw, ``from`` them.

    ``connecting`` covers greeting, EHLO, STARTTLS and AUTH: a 5xx there is about
    the relay, not the message. Anything else (a bug, not a vendor error) passes.
    """

    __slots__ = ("connecting", "provider")

    def __init__(self, provider: str, *, connecting: bool) -> None:
        self.provider = provider
        self.connecting = connecting

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ProviderError) or not isinstance(exc, Exception):
            return
        error = self._classify(exc)
        if error is not None:
            raise error from exc

    def _classify(self, exc: Exception) -> ProviderError | None:
        provider = self.provider
        if isinstance(exc, SMTPRecipientsRefused) and exc.recipients:
            first = exc.recipients[0]
            error = classify_smtp(provider, first.code, first.message)
            error.context["rejected"] = {
                r.recipient: f"{r.code} {r.message}" for r in exc.recipients
            }
            return error
        if isinstance(exc, SMTPAuthenticationError) and exc.code // 100 != 4:
            return ProviderAuthError(
                f"SMTP AUTH refused: {exc.code} {exc.message}",
                provider=provider,
                status=exc.code,
                response_excerpt=f"{exc.code} {exc.message}",
            )
        if isinstance(exc, SMTPResponseException):
            return classify_smtp(provider, exc.code, exc.message, connecting=self.connecting)
        if isinstance(exc, OSError | TimeoutError):  # drops, timeouts, TLS, DNS
            return classify_exception(provider, exc)
        if isinstance(exc, SMTPException):
            return ProviderTransientError(f"SMTP: {exc.message}", provider=provider)
        if isinstance(exc, ValueError) and not self.connecting:  # unsendable address
            return ProviderRejected(f"cannot send: {exc}", provider=provider)
        return None


class _Stale(Exception):
    """A reused connection had been dropped by the server before MAIL."""


class _Connection:
    __slots__ = ("messages", "smtp")

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.messages = 0


async def _open_socket(
    host: str, port: int, dns_timeout_s: float, timeout_s: float
) -> socket.socket:
    """Resolve (under dnsTimeout) and connect (under connectionTimeout) a TCP socket."""
    loop = asyncio.get_running_loop()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        try:
            async with asyncio.timeout(dns_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise ProviderTimeout(f"DNS lookup of {host} timed out") from exc
    error: OSError = OSError(f"no address for {host}")
    try:
        async with asyncio.timeout(timeout_s):
            for family, kind, proto, _, address in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                return sock
    except TimeoutError as exc:
        raise ProviderTimeout(f"connecting to {host}:{port} timed out") from exc
    raise error


class SMTPProvider:
    """Sends through one SMTP relay over a pool of reused connections."""

    type: ClassVar[str] = "smtp"

    def __init__(
        self,
        *,
        name: str,
        settings: SMTPSettings,
        auth: SMTPAuth | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._auth = auth
        self._tls = tls_context or settings.tls_context()
        self._tokens = (
            _Tokens(auth, provider=name, timeout_s=settings.connection_timeout_s)
            if auth is not None and auth.method == "xoauth2"
            else None
        )
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._idle: list[_Connection] = []
        self._limiter = (
            _SlidingWindow(settings.rate_limit, settings.rate_delta_s)
            if settings.rate_limit
            else None
        )
        self._local_hostname = settings.local_hostname
        self._closed = False
        #: connections opened for sending since start (health checks not counted)
        self.connections_opened = 0

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> SMTPProvider:
        settings = SMTPSettings.from_config(spec.config, base_dir=context.data_dir)
        return cls(
            name=spec.name, settings=settings, auth=SMTPAuth.from_mapping(spec.authentication)
        )

    async def send(self, message: OutgoingMessage) -> SendResult:
        recipients = list(dict.fromkeys(message.envelope_to))
        if not recipients or not message.mime:
            raise ProviderRejected("the message has no recipients or no MIME", provider=self.name)
        if self._closed:
            raise ProviderTransientError("the provider is closed", provider=self.name)
        if self._limiter is not None:
            await self._limiter.wait()
        async with self._slots:
            conn = await self._checkout()
            try:
                return await self._send_on(conn, message, recipients)
            except _Stale:
                return await self._send_on(await self._open(), message, recipients)

    async def check(self) -> HealthResult:
        """Connect, EHLO, STARTTLS, AUTH and QUIT on a fresh connection; never raises."""
        start = time.perf_counter()
        try:
            with _Translate(self.name, connecting=True):
                smtp = await self._handshake()
            tls = "TLS" if smtp.get_transport_info("sslcontext") is not None else "no TLS"
            await self._quit(smtp)
        except Exception as exc:
            latency = (time.perf_counter() - start) * 1000
            detail = exc.message if isinstance(exc, ProviderError) else repr(exc)
            return HealthResult(ok=False, latency_ms=latency, detail=detail)
        latency = (time.perf_counter() - start) * 1000
        auth = f", AUTH as {self._auth.user}" if self._auth else ""
        detail = f"{self.settings.host}:{self.settings.port} ({tls}{auth})"
        return HealthResult(ok=True, latency_ms=latency, detail=detail)

    async def aclose(self) -> None:
        """QUIT idle connections; connections busy sending close when they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._retire(conn) for conn in idle))
        if self._tokens is not None:
            await self._tokens.aclose()

    # -- pool -------------------------------------------------------------------

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # most recently used: least likely timed out
            if conn.smtp.is_connected:
                return conn
            self._drop(conn)
        return await self._open()

    async def _open(self) -> _Connection:
        with _Translate(self.name, connecting=True):
            conn = _Connection(await self._handshake())
        self.connections_opened += 1
        return conn

    async def _send_on(
        self, conn: _Connection, message: OutgoingMessage, recipients: list[str]
    ) -> SendResult:
        try:
            with _Translate(self.name, connecting=False):
                result = await self._transact(conn, message, recipients)
        except _Stale:
            self._drop(conn)
            raise
        except Exception:
            await self._recover(conn)
            raise
        except BaseException:  # cancelled mid-transaction: the session state is unknown
            self._drop(conn)
            raise
        await self._release(conn)
        return result

    async def _release(self, conn: _Connection) -> None:
        if self._closed or conn.messages >= self.settings.max_messages:
            await self._retire(conn)
        else:
            self._idle.append(conn)

    async def _recover(self, conn: _Connection) -> None:
        """After a refusal, RSET and keep the connection; after a drop, discard it."""
        if not self._closed and conn.smtp.is_connected:
            try:
                await conn.smtp.rset(
                    timeout=min(self.settings.socket_timeout_s, _COURTESY_TIMEOUT_S)
                )
            except (SMTPException, OSError):
                pass
            except BaseException:
                self._drop(conn)
                raise
            else:
                await self._release(conn)
                return
        self._drop(conn)

    async def _retire(self, conn: _Connection) -> None:
        try:
            await self._quit(conn.smtp)
        finally:
            self._drop(conn)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.quit(timeout=min(self.settings.socket_timeout_s, _COURTESY_TIMEOUT_S))
        except (SMTPException, OSError):
            pass
        finally:
            smtp.close()

    def _drop(self, conn: _Connection) -> None:
        conn.smtp.close()

    # -- one connection -----------------------------------------------------------

    async def _handshake(self) -> aiosmtplib.SMTP:
        """Connect, greet, STARTTLS and authenticate; raw vendor errors escape."""
        s = self.settings
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        sock = await _open_socket(s.host, s.port, s.dns_timeout_s, s.connection_timeout_s)
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            sock=sock,
            use_tls=s.secure,
            start_tls=False,
            tls_context=self._tls,
            local_hostname=self._local_hostname,
            timeout=s.socket_timeout_s,
        )
        try:
            # the greeting timeout also bounds an implicit-TLS handshake
            await smtp.connect(timeout=s.greeting_timeout_s)
            await self._ehlo(smtp)
            if not (s.secure or s.ignore_tls):
                if smtp.supports_extension("starttls"):
                    await smtp.starttls(timeout=s.connection_timeout_s)
                    await self._ehlo(smtp)
                elif s.require_tls:
                    raise ProviderTransientError(
                        f"{s.host}:{s.port} does not offer STARTTLS and requireTLS is set",
                        provider=self.name,
                        tls=True,
                    )
            if self._auth is not None:
                await self._authenticate(smtp, self._auth)
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()  # a pre-ESMTP server

    async def _authenticate(self, smtp: aiosmtplib.SMTP, auth: SMTPAuth) -> None:
        if not smtp.supports_extension("auth"):
            raise ProviderAuthError(
                f"{self.settings.host} does not offer AUTH"
                + ("" if smtp.get_transport_info("sslcontext") else " without TLS"),
                provider=self.name,
            )
        if self._tokens is not None:
            token = await self._tokens.get()
            try:
                await smtp.auth_xoauth2(auth.user, token)
            except SMTPAuthenticationError:
                self._tokens.invalidate(token)
                raise
            return
        password = auth.password or ""
        if auth.method is None and not smtp.supported_auth_methods:
            offered = " ".join(smtp.server_auth_methods).upper()
            raise ProviderAuthError(
                f"no AUTH mechanism in common (server offers {offered})", provider=self.name
            )
        if auth.method == "plain":
            await smtp.auth_plain(auth.user, password)
        elif auth.method == "login":
            await smtp.auth_login(auth.user, password)
        else:
            await smtp.login(auth.user, password)

    async def _transact(
        self, conn: _Connection, message: OutgoingMessage, recipients: list[str]
    ) -> SendResult:
        """MAIL, RCPT for each recipient, DATA: one message on one connection.

        Driven step by step rather than through ``sendmail`` so that a drop before
        MAIL on a reused connection is known to be harmless and can be retried.
        """
        smtp = conn.smtp
        reused = conn.messages > 0
        conn.messages += 1
        options: list[str] = []
        encoding = "ascii"
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(message.mime)}")
        if not message.mime.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if not (message.envelope_from.isascii() and all(r.isascii() for r in recipients)):
            if not smtp.supports_extension("smtputf8"):
                raise ProviderRejected(
                    "an address is not ASCII and the server does not offer SMTPUTF8",
                    provider=self.name,
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        try:
            await smtp.mail(message.envelope_from, options=options, encoding=encoding)
        except (SMTPServerDisconnected, SMTPResponseException) as exc:
            if reused and (isinstance(exc, SMTPServerDisconnected) or exc.code == 421):
                raise _Stale from exc
            raise
        refused: list[SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await smtp.rcpt(recipient, encoding=encoding)
            except SMTPRecipientRefused as exc:
                refused.append(exc)
        if len(refused) == len(recipients):
            raise SMTPRecipientsRefused(refused)
        reply = await smtp.data(message.mime)
        return SendResult(
            provider=self.name,
            provider_message_id=message.message_id,
            rejected={r.recipient: f"{r.code} {r.message}" for r in refused},
            response=f"{reply.code} {reply.message}",
        )
