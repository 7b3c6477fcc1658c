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
import re
import socket
import ssl
import time
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientsRefused,
    SMTPResponseException,
)

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
    ProviderUnavailable,
)
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.classify import classify_exception, classify_smtp
from postroom.providers.oauth2 import OAuth2Tokens
from postroom.providers.registry import ProviderContext
from postroom.providers.smtp_config import AUTHENTICATION_KEYS, CONFIG_KEYS, SMTPAuth, SMTPSettings
from postroom.providers.smtp_wire import Stale, Wire, data_payload

if TYPE_CHECKING:
    pass

__all__ = ["SMTPAuth", "SMTPProvider", "SMTPSettings"]

#: QUIT and RSET are courtesies; never let them hold a pool slot for long
_COURTESY_TIMEOUT_S = 5.0


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


#: characters that cannot appear in an unquoted envelope path
_UNSENDABLE = re.compile(r"[\s<>\x00-\x1f\x7f]")


class _Connection:
    """A handshaken connection: ``smtp`` knows the server's extensions, ``wire`` speaks."""

    __slots__ = ("messages", "smtp", "wire")

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        assert smtp.transport is not None  # connected by the handshake
        self.wire = Wire(smtp.transport)
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
    config_keys: ClassVar[frozenset[str]] = CONFIG_KEYS
    authentication_keys: ClassVar[frozenset[str]] = AUTHENTICATION_KEYS
    #: the relay host is not guarded (relays on private networks are normal)
    url_fields: ClassVar[tuple[str, ...]] = ("authentication.tokenUrl",)

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
            OAuth2Tokens(
                auth,
                provider=name,
                timeout_s=settings.connection_timeout_s,
                allow_networks=settings.allow_networks,
            )
            if auth is not None and auth.method == "xoauth2"
            else None
        )
        self._slots = asyncio.Semaphore(settings.max_connections)
        #: sends in flight at most (the router's connection slots)
        self.pool_size = settings.max_connections
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
            except Stale:
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
            if conn.wire.is_connected:
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
        except Stale:
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
        if not self._closed and conn.wire.is_connected:
            try:
                reply = await conn.wire.command(b"RSET", self._courtesy_timeout_s)
            except (SMTPException, OSError):
                pass
            except BaseException:
                self._drop(conn)
                raise
            else:
                if reply.code == 250:
                    await self._release(conn)
                    return
        self._drop(conn)

    async def _retire(self, conn: _Connection) -> None:
        try:
            if conn.wire.is_connected:
                await conn.wire.command(b"QUIT", self._courtesy_timeout_s)
        except (SMTPException, OSError):
            pass
        finally:
            self._drop(conn)

    @property
    def _courtesy_timeout_s(self) -> float:
        return min(self.settings.socket_timeout_s, _COURTESY_TIMEOUT_S)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.quit(timeout=self._courtesy_timeout_s)
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
        try:
            sock = await _open_socket(s.host, s.port, s.dns_timeout_s, s.connection_timeout_s)
        except OSError as exc:  # DNS, refused, unreachable, timed out (ProviderTimeout too)
            raise self._unreachable(exc) from exc
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
            try:
                await smtp.connect(timeout=s.greeting_timeout_s)
            except SMTPConnectResponseError:
                raise  # the server answered: classified like any reply
            except SMTPConnectError as exc:  # no greeting in time, or dropped before it
                raise self._unreachable(exc) from exc
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

    def _unreachable(self, exc: BaseException) -> ProviderUnavailable:
        s = self.settings
        detail = exc.message if isinstance(exc, ProviderError) else str(exc) or type(exc).__name__
        return ProviderUnavailable(f"cannot reach {s.host}:{s.port}: {detail}", provider=self.name)

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

        Driven by ``Wire`` rather than ``sendmail`` so that a drop before MAIL on a
        reused connection is known to be harmless and can be retried, and so that the
        commands go out in one write when the server offers PIPELINING.
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
        # MAIL and RCPT are written directly: the addresses were validated and
        # normalized when the message was accepted, and aiosmtplib's own address
        # parsing (email.utils) is a measurable share of a send
        for address in (message.envelope_from, *recipients):
            if _UNSENDABLE.search(address):
                raise ValueError(f"{address!r} cannot be written as an SMTP envelope address")
        mail = b" ".join(
            [b"MAIL FROM:<" + message.envelope_from.encode(encoding) + b">"]
            + [o.encode("ascii") for o in options]
        )
        reply, refused = await conn.wire.transaction(
            mail,
            [(r, r.encode(encoding)) for r in recipients],
            data_payload(message.mime),
            pipelining=smtp.supports_extension("pipelining"),
            reused=reused,
            timeout=self.settings.socket_timeout_s,
        )
        if len(refused) == len(recipients):
            raise SMTPRecipientsRefused(refused)
        return SendResult(
            provider=self.name,
            provider_message_id=message.message_id,
            rejected={r.recipient: f"{r.code} {r.message}" for r in refused},
            response=f"{reply.code} {reply.message}",
        )
