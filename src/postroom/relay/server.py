"""The SMTP submission server: aiosmtpd in front of the same queue as the API.

A session is refused at ``MAIL`` unless it authenticated (see ``relay.auth``) or
comes from a trusted network, so no client can relay without a credential. The
reply to ``DATA`` is sent only after ``Postroom.send_raw`` has committed the
job: ``250 2.0.0 Ok: queued as <id>`` names the id ``GET /status/{id}`` knows,
and a relay killed after that reply has already made the message durable.

Replies for refusals: 530 (authenticate first), 535 (bad credentials), 538 (AUTH
needs TLS), 552 (too large, from aiosmtpd's ``SIZE`` handling), 452 (too many
recipients), 451 (rate limit, or the database is unavailable: try again), 553
(a malformed address), 554 (the message itself is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.errors import ConfigError, MessageError
from postroom.relay import auth, data
from postroom.services import raw_sending
from postroom.services.raw_sending import RawEnvelope

log = logging.getLogger(__name__)


def _defer(*args: Any) -> AuthResult:
    """aiosmtpd's authenticator is synchronous: pass the login on for an async check."""
    # called as (server, session, envelope, mechanism, auth data)
    return AuthResult(success=True, auth_data=args[-1])


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


@functools.lru_cache(maxsize=4096)
def _parse_path(arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's ``_getaddr`` for a MAIL/RCPT argument: (address, parameters), or
    (None, None) when it does not parse. Cached: it builds classes on every call, and
    a relay sees the same few addresses over and over."""
    if not arg:
        return "", ""
    address: Any
    try:
        if arg.lstrip().startswith("<"):
            address, rest = get_angle_addr(arg)
        else:
            address, rest = get_addr_spec(arg)
    except HeaderParseError:
        return None, None
    return str(address.addr_spec), str(rest)


class _Session(SMTP):
    """aiosmtpd's protocol with AUTH PLAIN/LOGIN checked against API keys, and a
    faster DATA phase (``relay.data``)."""

    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        # aiosmtpd inspects the handler's members for every connection: keep it small
        super().__init__(relay.handler, authenticator=_defer, **kwargs)
        self.relay = relay
        self._deadline = 0.0

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(server, args))

    async def _verify(self, result: AuthResult) -> AuthResult:
        if not result.success or not isinstance(result.auth_data, LoginPassword):
            return result
        login, password = result.auth_data
        credential = await auth.api_key(self.relay.postroom.keys, login, password)
        if credential is None:
            peer = self.session.peer if self.session else None
            log.info("smtp: AUTH refused for %r from %s", login[:64], peer)
            return AuthResult(success=False, handled=False)  # 535 5.7.8
        return AuthResult(success=True, auth_data=credential)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd cancels and schedules a timer for every command; here the deadline
        moves and one timer, when it fires early, waits again for what is left."""
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and handle.when() <= self._deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._on_timer)
        elif self.transport is not None:
            self._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if self.local_part_limit:  # not set by the relay: aiosmtpd's own check
            return super()._getaddr(arg)
        return _parse_path(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA command with the content read by ``relay.data``: the same
        checks and replies, a fraction of the CPU."""
        limit = self.data_size_limit
        if self._decode_data or not limit:  # not how the relay runs: aiosmtpd's own loop
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope, session = self.envelope, self.session
        assert envelope is not None and session is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        # the stream limit is the longest line aiosmtpd reads (1001 bytes); for DATA
        # a whole message must fit (asyncio has no public way to change it)
        narrow: int = getattr(reader, "_limit")  # noqa: B009
        setattr(reader, "_limit", limit + 8)  # noqa: B010
        try:
            got = await data.read(reader, size_limit=limit, line_limit=self.line_length_limit)
        except asyncio.CancelledError:  # the connection was reset or closed
            log.info("smtp: connection lost during DATA from %s", session.peer)
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            self._writer.close()
            return
        finally:
            setattr(reader, "_limit", narrow)  # noqa: B010
        if got.content is None:
            await self.push(got.refusal or data.TOO_MUCH)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        envelope.content = envelope.original_content = got.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


class Relay:
    """The SMTP submission listeners of one Postroom."""

    def __init__(self, postroom: Postroom, settings: SmtpSettings | None = None) -> None:
        self.postroom = postroom
        self.settings = settings or postroom.settings.smtp
        self.networks = auth.parse_networks(self.settings.trusted_networks)
        self.limiter = auth.RateLimiter(self.settings.rate_limit_per_minute)
        self.tls_context = self._tls_context()
        self.handler = _Handler(self)
        self._servers: list[asyncio.Server] = []
        self._trusted: dict[str, auth.Credential | None] = {}
        #: the bound (host, port) of each listener: the submission port first
        self.addresses: list[tuple[str, int]] = []

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if (s.tls_cert is None) != (s.tls_key is None):
            raise ConfigError("POSTROOM_SMTP__TLS_CERT and POSTROOM_SMTP__TLS_KEY go together")
        if s.tls_cert is None or s.tls_key is None:
            if s.tls_port is not None:
                raise ConfigError("POSTROOM_SMTP__TLS_PORT needs a certificate (TLS_CERT/TLS_KEY)")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(s.tls_cert, s.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the SMTP certificate: {exc}") from None
        return context

    def _plain_auth_allowed(self) -> bool:
        """AUTH without TLS: only on loopback, and only when explicitly allowed."""
        if not self.settings.insecure_loopback_auth:
            return False
        try:
            return ipaddress.ip_address(self.settings.host).is_loopback
        except ValueError:
            return self.settings.host == "localhost"

    def _protocol(self, *, implicit_tls: bool) -> _Session:
        return _Session(
            self,
            hostname=self.settings.hostname,
            ident="Postroom ESMTP",
            data_size_limit=self.postroom.settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            # the implicit-TLS port is encrypted from the first byte
            tls_context=None if implicit_tls else self.tls_context,
            auth_require_tls=not (implicit_tls or self._plain_auth_allowed()),
            timeout=self.settings.timeout_s,
        )

    async def start(
        self, port: int | None = None, *, sockets: Sequence[socket.socket] | None = None
    ) -> Relay:
        """Listen on the submission port (``port`` overrides the setting; 0: any free port).

        ``sockets``: listening sockets bound already (see :func:`bind`), shared by
        several relay processes: the submission port's, then the implicit-TLS one's.
        """
        if sockets is not None:
            for sock, implicit_tls in zip(sockets, (False, True), strict=False):
                await self._listen(None, None, implicit_tls=implicit_tls, sock=sock)
            return self
        host = self.settings.host
        port = self.settings.port if port is None else port
        if port is None:
            raise ConfigError("no SMTP port: set POSTROOM_SMTP__PORT or pass --smtp-port")
        await self._listen(host, port, implicit_tls=False)
        if self.settings.tls_port is not None and self.tls_context is not None:
            await self._listen(host, self.settings.tls_port, implicit_tls=True)
        return self

    async def _listen(
        self,
        host: str | None,
        port: int | None,
        *,
        implicit_tls: bool,
        sock: socket.socket | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        tls = self.tls_context if implicit_tls else None

        def protocol() -> _Session:
            return self._protocol(implicit_tls=implicit_tls)

        try:
            if sock is not None:
                server = await loop.create_server(protocol, sock=sock, ssl=tls)
            else:
                server = await loop.create_server(protocol, host, port or 0, ssl=tls)
        except OSError as exc:
            await self.aclose()
            raise ConfigError(
                f"cannot listen for SMTP on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._servers.append(server)
        self.addresses.append(server.sockets[0].getsockname()[:2])

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    def credential(self, session: Session) -> auth.Credential | None:
        """Who ``session`` submits as: its AUTH credential or its trusted network."""
        if session.authenticated and isinstance(session.auth_data, auth.Credential):
            return session.auth_data
        peer = str(session.peer[0]) if session.peer else ""
        if peer not in self._trusted:
            if len(self._trusted) > 10_000:
                self._trusted.clear()
            self._trusted[peer] = auth.trusted(peer, self.networks)
        return self._trusted[peer]


class _Handler:
    """The aiosmtpd handler hooks: who may submit, and into the queue with the rest."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        credential = self.relay.credential(session)
        if credential is None:
            return "530 5.7.0 Authentication required"
        if not self.relay.limiter.take(credential.id):
            return "451 4.7.1 Rate limit reached for this credential, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.relay.credential(session) is None:
            return "530 5.7.0 Authentication required"
        most = self.relay.settings.max_recipients
        if len(envelope.rcpt_tos) >= most:
            return f"452 4.5.3 Too many recipients (at most {most})"
        if raw_sending.envelope_address(address) is None:
            return "553 5.1.3 The recipient address is not valid"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        credential = self.relay.credential(session)
        if credential is None:  # not reachable through MAIL, but never relay unchecked
            return "530 5.7.0 Authentication required"
        content = envelope.original_content or b""
        raw_envelope = RawEnvelope(
            mail_from=envelope.mail_from or None,
            recipients=list(envelope.rcpt_tos),
            source="smtp",
            submitted_by=credential.label,
        )
        try:
            result = await self.relay.postroom.send_raw(
                content, raw_envelope, api_key_id=credential.key_id
            )
        except MessageError as exc:
            return f"554 5.6.0 {_one_line(exc.message)}"
        except Exception:
            log.exception("smtp: could not queue a message from %s", session.peer)
            return "451 4.3.0 The message could not be stored, try again later"
        return f"250 2.0.0 Ok: queued as {result.id}"
