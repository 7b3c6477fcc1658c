"""An in-process SMTP server for provider tests, built on aiosmtpd.

It runs on the test's own event loop (127.0.0.1, ephemeral port), so a test can
script faults without threads or sleeps:

- ``server.script("RCPT", "550 5.1.1 no such user", address="bad@example.com")``
  replaces the next reply to a command (``times=None``: every reply). The special
  replies :data:`HANG` (never answer) and :data:`DISCONNECT` (drop the connection)
  make timeouts and drops; ``"GREETING"`` scripts the banner.
- ``tls=`` serves implicit TLS, ``starttls=`` offers STARTTLS (trustme contexts).
- ``users=`` enables AUTH PLAIN/LOGIN, ``oauth_tokens=`` AUTH XOAUTH2.
- ``pipelining=True`` advertises PIPELINING; ``written_with_mail`` shows what a
  client wrote together with each MAIL.
- ``received``, ``connections``, ``peak_connections``, ``commands``, ``auth_log`` and
  ``tls_connections`` record what clients did.

:class:`TokenEndpoint` is a matching OAuth2 token endpoint for XOAUTH2 refreshes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
import warnings
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, cast
from urllib.parse import parse_qsl

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

#: a scripted reply that never comes: the client has to time out
HANG = "<hang>"
#: a scripted reply that is a dropped connection instead
DISCONNECT = "<disconnect>"


@dataclass
class Received:
    """One message as the server accepted it."""

    connection: int
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes

    def message(self) -> EmailMessage:
        return cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(self.data))


@dataclass
class _Rule:
    command: str
    reply: str
    times: int | None
    address: str | None


@dataclass
class _Auth:
    connection: int
    mechanism: str
    user: str
    success: bool


class _Session(SMTP):  # type: ignore[misc]
    """aiosmtpd's protocol, numbered once connected, with a scriptable greeting."""

    def __init__(self, owner: SMTPServer, **kwargs: Any) -> None:
        super().__init__(owner.handler, **kwargs)
        self.owner = owner
        self.connection = 0
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.connection == 0:  # not the STARTTLS upgrade
            self.connection = self.owner.connected(self)
            if transport.get_extra_info("sslcontext") is not None:
                self.owner.tls_connections.add(self.connection)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.closed.done():
            return
        super().connection_lost(error)
        self.closed.set_result(None)
        self.owner.open_connections -= 1

    async def _handle_client(self) -> None:
        reply = self.owner.take("GREETING", None)
        if reply is None:
            await super()._handle_client()
        elif await self.owner.act(self, reply):
            await self.push(reply)
            self.transport.close()


class _Handler:
    """aiosmtpd hooks: record everything, answer from the script or by default."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.owner.record(server, "EHLO")
        session.host_name = hostname
        reply = self.owner.take("EHLO", None)
        if reply is not None and await self.owner.act(server, reply):
            return [reply]
        responses = [r for r in responses if r.strip() != "250-AUTH"]
        if self.owner.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> Any:
        self.owner.record(server, "MAIL")
        # what the client wrote after MAIL and before this reply: pipelined commands
        self.owner.written_with_mail.append(bytes(server._reader._buffer))
        return await self._scripted(server, "MAIL", address)

    async def handle_RCPT(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> Any:
        self.owner.record(server, "RCPT")
        return await self._scripted(server, "RCPT", address)

    async def handle_RSET(self, server: _Session, session: Session, envelope: Envelope) -> Any:
        self.owner.record(server, "RSET")
        return await self._scripted(server, "RSET", None)

    async def handle_QUIT(self, server: _Session, session: Session, envelope: Envelope) -> Any:
        self.owner.record(server, "QUIT")
        return await self._scripted(server, "QUIT", None)

    async def handle_DATA(self, server: _Session, session: Session, envelope: Envelope) -> str:
        self.owner.record(server, "DATA")
        self.owner.received.append(
            Received(
                connection=server.connection,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                mail_options=list(envelope.mail_options),
                data=envelope.original_content,
            )
        )
        reply = self.owner.take("DATA", None)
        if reply is None:
            return "250 2.0.0 Ok: queued"
        await self.owner.act(server, reply)
        return reply

    def handle_STARTTLS(self, server: _Session, session: Session, envelope: Envelope) -> bool:
        self.owner.tls_connections.add(server.connection)
        return True

    async def auth_XOAUTH2(self, server: _Session, args: list[str]) -> AuthResult:
        blob = args[1] if len(args) > 1 else await server.challenge_auth("", encode_to_b64=False)
        try:
            raw = base64.b64decode(blob, validate=True).decode()
            fields = dict(part.split("=", 1) for part in raw.split("\x01") if part)
            user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
        except (binascii.Error, UnicodeDecodeError, ValueError, KeyError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 bad XOAUTH2 data")
        ok = token in self.owner.oauth_tokens.get(user, ())
        self.owner.auth_log.append(_Auth(server.connection, "XOAUTH2", user, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # as Gmail does: a JSON error as a challenge, then the final reply
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)

    def authenticate(
        self, server: _Session, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user, password = data.login.decode(), data.password.decode()
        ok = self.owner.users.get(user) == password
        self.owner.auth_log.append(_Auth(server.connection, mechanism, user, ok))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def _scripted(self, server: _Session, command: str, address: str | None) -> Any:
        reply = self.owner.take(command, address)
        if reply is None:
            return MISSING
        await self.owner.act(server, reply)
        return reply


class SMTPServer:
    """One scripted SMTP server; ``async with SMTPServer(...) as server``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        users: dict[str, str] | None = None,
        oauth_tokens: dict[str, set[str]] | None = None,
        auth_required: bool = False,
        auth_require_tls: bool = False,
        enable_smtputf8: bool = False,
        pipelining: bool = False,
    ) -> None:
        self.handler = _Handler(self)
        #: advertise PIPELINING (RFC 2920); aiosmtpd reads pipelined commands in order
        self.pipelining = pipelining
        #: for each MAIL, the bytes that had arrived behind it (RCPT, DATA when pipelined)
        self.written_with_mail: list[bytes] = []
        self.users = users or {}
        self.oauth_tokens = oauth_tokens or {}
        self.port = 0
        self.received: list[Received] = []
        #: (connection number, command) for EHLO, MAIL, RCPT, DATA, RSET and QUIT
        self.commands: list[tuple[int, str]] = []
        self.auth_log: list[_Auth] = []
        self.tls_connections: set[int] = set()
        self.connections = 0
        self.open_connections = 0
        self.peak_connections = 0
        self._tls = tls
        excluded = [] if users is not None else ["PLAIN", "LOGIN"]
        if oauth_tokens is None:
            excluded.append("XOAUTH2")
        self._options: dict[str, Any] = {
            "hostname": "smtpd.test",
            "tls_context": starttls,
            "require_starttls": require_starttls,
            "auth_required": auth_required,
            "auth_require_tls": auth_require_tls,
            "auth_exclude_mechanism": excluded,
            "authenticator": self.handler.authenticate,
            "enable_SMTPUTF8": enable_smtputf8,
        }
        self._rules: list[_Rule] = []
        self._sessions: list[_Session] = []
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    def record(self, session: _Session, command: str) -> None:
        self.commands.append((session.connection, command))
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, command: str, count: int = 1) -> None:
        """Return once clients have sent ``command`` ``count`` times (5 s at most)."""
        async with asyncio.timeout(5):
            while sum(name == command for _, name in self.commands) < count:
                await self._changed.wait()

    def script(
        self, command: str, reply: str, *, times: int | None = 1, address: str | None = None
    ) -> None:
        """Answer ``command`` (for MAIL/RCPT: only for ``address``) with ``reply``."""
        self._rules.append(_Rule(command.upper(), reply, times, address))

    def unscript(self) -> None:
        """Forget every scripted reply: answer normally again."""
        self._rules.clear()

    def take(self, command: str, address: str | None) -> str | None:
        for rule in self._rules:
            if rule.command == command and rule.address in (None, address):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule.reply
        return None

    async def act(self, session: _Session, reply: str) -> bool:
        """Carry out HANG or DISCONNECT (never returns); True for an ordinary reply."""
        if reply == DISCONNECT:
            session.transport.close()
        if reply in (HANG, DISCONNECT):
            await asyncio.Event().wait()  # cancelled when the connection goes
        return True

    def by_connection(self, command: str) -> dict[int, int]:
        """How many times each connection sent ``command``."""
        counts: dict[int, int] = {}
        for connection, name in self.commands:
            if name == command:
                counts[connection] = counts.get(connection, 0) + 1
        return counts

    def drop_connections(self) -> None:
        """Close every client connection from the server side (an idle timeout)."""
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()

    def connected(self, session: _Session) -> int:
        """Count a new connection (after any implicit-TLS handshake); its number."""
        self.connections += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        self._sessions.append(session)
        return self.connections

    def _factory(self) -> _Session:
        with warnings.catch_warnings():  # "Requiring AUTH while not requiring TLS"
            warnings.simplefilter("ignore")
            return _Session(self, loop=asyncio.get_running_loop(), **self._options)

    async def start(self) -> SMTPServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self.host, 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        pending = [s.closed for s in self._sessions if not s.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> SMTPServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@dataclass
class TokenEndpoint:
    """A tiny OAuth2 token endpoint: each refresh-token grant gets ``token-<n>``."""

    expires_in: int = 3600
    #: answer with this status and body instead of a token
    fail_with: tuple[int, str] | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def start(self) -> TokenEndpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            form = dict(parse_qsl((await reader.readexactly(length)).decode()))
            self.requests.append(form)
            if self.fail_with is not None:
                status, body = self.fail_with
            elif form.get("grant_type") != "refresh_token":
                status, body = 400, json.dumps({"error": "unsupported_grant_type"})
            else:
                token = f"token-{len(self.requests)}"
                status = 200
                body = json.dumps(
                    {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
                )
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
