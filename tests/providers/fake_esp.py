"""Fake ESP HTTP servers for the provider contract tests.

Each fake is a real HTTP server (uvicorn, a raw ASGI app) on 127.0.0.1 with an
ephemeral port, in a background thread. It checks method, path, credentials and
body the way the ESP documents them and answers like the ESP (a request it would
refuse gets the ESP's 400/401/422 answer), records every request, and can be
scripted to answer anything else next (2xx, 400, 401, 429 + Retry-After, 500) or to
hang until the test is over (for timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, ClassVar

import uvicorn

from postroom.providers.base import Address, Attachment, OutgoingMessage

#: the fakes listen on loopback, which the SSRF guard refuses unless a provider's
#: ``allowNetworks`` lets it through
LOOPBACK = ["127.0.0.0/8"]


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    #: lower-cased header names
    headers: dict[str, str]
    body: bytes
    #: the client's (address, port): one per connection
    peer: tuple[str, int] | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[Part]:
        return parse_multipart(self.headers.get("content-type", ""), self.body)


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    content: bytes


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang: bool = False

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(
            status,
            {"Content-Type": "application/json", **(headers or {})},
            json.dumps(data).encode(),
        )


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body exactly, bytes untouched."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise ValueError(f"not multipart/form-data: {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append(
            Part(
                name=name.group(1) if name else "",
                filename=filename.group(1) if filename else None,
                content_type=headers.get("content-type"),
                content=content.removesuffix(b"\r\n"),
            )
        )
    return parts


def is_base64(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class FakeESP:
    """A fake ESP server; subclasses implement :meth:`handle` for their API."""

    name: ClassVar[str] = "esp"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._counter = 0
        self.scheme = "http"

    # -- lifecycle -------------------------------------------------------------

    def start(self, *, certfile: str | None = None, keyfile: str | None = None) -> FakeESP:
        """Serve on 127.0.0.1 (HTTPS when a certificate and key are given)."""
        # Bound and listening before the thread starts: early clients wait in the backlog.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._sock = sock
        self.scheme = "https" if certfile else "http"
        config = uvicorn.Config(
            self,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        self._release_hangs()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------

    def reset(self) -> None:
        self._release_hangs()
        with self._lock:
            self.requests.clear()
            self._script.clear()

    def script(
        self,
        status: int = 200,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        hang: bool = False,
    ) -> None:
        """Answer the next accepted request with this instead of the default success."""
        if json is not None:
            reply = Reply.json(status, json, headers)
        else:
            reply = Reply(status, dict(headers or {}), body or b"")
        reply.hang = hang
        with self._lock:
            self._script.append(reply)

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def _release_hangs(self) -> None:
        loop, event = self._loop, self._release
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop already stopped
                pass

    # -- ASGI ------------------------------------------------------------------

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        if scope["type"] != "http":
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()
        release = self._release
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        recorded = Recorded(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=body,
            peer=tuple(scope["client"]) if scope.get("client") else None,
        )
        with self._lock:
            self.requests.append(recorded)
        reply = self.handle(recorded)
        if reply.hang:
            await release.wait()
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in {**reply.headers, "Content-Length": str(len(reply.body))}.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    def scripted(self) -> Reply | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def handle(self, request: Recorded) -> Reply:
        raise NotImplementedError


def sample_message(**overrides: Any) -> OutgoingMessage:
    """A message using every feature adapters map: names, Cc/Bcc, attachments, tags."""
    fields: dict[str, Any] = {
        "email_id": "0b6e7c1e-6f7a-4e59-9a59-5c3f1f2b8e01",
        "message_id": "<0b6e7c1e.postroom@example.com>",
        "from_": Address(email="news@example.com", name="Example News"),
        "to": (Address(email="ann@example.org", name="Ann Lee"), Address(email="bob@example.org")),
        "cc": (Address(email="cat@example.org"),),
        "bcc": (Address(email="dan@example.org"),),
        "reply_to": (Address(email="help@example.com", name="Help Desk"),),
        "subject": "Your order ✓",
        "text": "Hello Ann\nYour order shipped.",
        "html": '<p>Hello Ann</p><img src="cid:logo">',
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<https://example.com/u/1>"},
        "attachments": (
            Attachment(
                filename="invoice.pdf", content=b"%PDF-1.4 fake", content_type="application/pdf"
            ),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG fake",
                content_type="image/png",
                disposition="inline",
                cid="logo",
            ),
        ),
        "tags": ("orders", "shipping"),
        "metadata": {"order_id": "A-1001", "attempt": 2},
    }
    fields.update(overrides)
    if "mime" not in overrides:
        fields["mime"] = build_mime(fields)
    return OutgoingMessage(**fields)


def build_mime(fields: Mapping[str, Any]) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = fields["from_"].formatted()
    msg["To"] = ", ".join(a.formatted() for a in fields["to"])
    if fields["cc"]:
        msg["Cc"] = ", ".join(a.formatted() for a in fields["cc"])
    msg["Subject"] = fields["subject"]
    msg["Message-ID"] = fields["message_id"]
    for key, value in fields["headers"].items():
        msg[key] = value
    msg.set_content(fields["text"] or "")
    if fields["html"]:
        msg.add_alternative(fields["html"], subtype="html")
    return msg.as_bytes()


def parse_mime(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- SendGrid v3 ------------------------------------------------------------------

SENDGRID_KEYS = frozenset(
    {"personalizations", "from", "reply_to_list", "subject", "content", "attachments",
     "headers", "categories", "custom_args"}
)  # fmt: skip
SENDGRID_RESERVED = frozenset(
    {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
     "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
)  # fmt: skip


class SendGridFake(FakeESP):
    name = "sendgrid"

    def __init__(self, api_key: str = "SG.test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.scopes = ["mail.send", "user.profile.read"]

    @staticmethod
    def error(status: int, message: str, field: str | None = None) -> Reply:
        return Reply.json(status, {"errors": [{"message": message, "field": field, "help": None}]})

    def handle(self, request: Recorded) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if (request.method, request.path) == ("GET", "/v3/scopes"):
            return self.scripted() or Reply.json(200, {"scopes": self.scopes})
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return self.error(404, "not found")
        if request.headers.get("content-type") != "application/json":
            return self.error(415, "Content-Type should be application/json.")
        problems = self.problems(request.json())
        if problems:
            return Reply.json(400, {"errors": [{"message": m, "field": f} for f, m in problems]})
        return self.scripted() or Reply(202, {"X-Message-Id": f"sg-{self.next_id()}"})

    def problems(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """What SendGrid's documented request schema would refuse."""
        out = [(k, "unknown field") for k in body if k not in SENDGRID_KEYS]
        pers = body.get("personalizations")
        if not isinstance(pers, list) or not pers:
            out.append(("personalizations", "at least one personalization is required"))
            pers = []
        for p in pers:
            if not p.get("to"):
                out.append(("personalizations.to", "at least one to is required"))
            emails = [a["email"].lower() for k in ("to", "cc", "bcc") for a in p.get(k, [])]
            if len(emails) != len(set(emails)):
                out.append(("personalizations", "Each email address must be unique"))
        if not isinstance(body.get("from"), dict) or "email" not in body["from"]:
            out.append(("from.email", "The from object must be provided"))
        content = body.get("content") or []
        types = [c.get("type") for c in content]
        if not content or any(not c.get("value") for c in content):
            out.append(("content", "content must have a value"))
        if "text/plain" in types and types.index("text/plain") != 0:
            out.append(("content", "text/plain must come first"))
        for a in body.get("attachments", []):
            if not is_base64(a.get("content")) or not a.get("filename"):
                out.append(("attachments", "content must be base64 and filename set"))
            if a.get("disposition") == "inline" and not a.get("content_id"):
                out.append(("attachments.content_id", "required for inline"))
        for name, value in body.get("headers", {}).items():
            if name.lower() in SENDGRID_RESERVED or not isinstance(value, str):
                out.append(("headers", f"reserved or non-string header {name}"))
        if len(body.get("categories", [])) > 10:
            out.append(("categories", "too many categories"))
        if any(not isinstance(v, str) for v in body.get("custom_args", {}).values()):
            out.append(("custom_args", "values must be strings"))
        return out


# -- Mailgun v3 -------------------------------------------------------------------


class MailgunFake(FakeESP):
    name = "mailgun"

    def __init__(self, api_key: str = "key-test", domain: str = "mg.example.com") -> None:
        super().__init__()
        self.api_key = api_key
        self.domain = domain
        self.domain_state = "active"

    def handle(self, request: Recorded) -> Reply:
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Reply(401, {"Content-Type": "text/plain"}, b"Forbidden")
        if request.method == "GET" and request.path.startswith("/v4/domains/"):
            if request.path != f"/v4/domains/{self.domain}":
                return Reply.json(404, {"message": "Domain not found"})
            state = {"name": self.domain, "state": self.domain_state}
            return self.scripted() or Reply.json(200, {"domain": state})
        if request.method != "POST" or not request.path.endswith("/messages.mime"):
            return Reply.json(404, {"message": "not found"})
        if request.path != f"/v3/{self.domain}/messages.mime":
            return Reply.json(404, {"message": f"Domain not found: {request.path.split('/')[2]}"})
        try:
            parts = request.form()
        except ValueError as exc:
            return Reply.json(400, {"message": str(exc)})
        names = [p.name for p in parts]
        if "to" not in names:
            return Reply.json(400, {"message": "to parameter is missing"})
        files = [p for p in parts if p.name == "message"]
        if len(files) != 1 or files[0].filename is None or not files[0].content:
            return Reply.json(400, {"message": "message parameter is missing"})
        unknown = [
            n for n in names if n not in ("to", "message") and n[:2] not in ("o:", "v:", "h:")
        ]
        if unknown:
            return Reply.json(400, {"message": f"unknown parameters {unknown}"})
        queued = {
            "id": f"<20260101.{self.next_id()}@{self.domain}>",
            "message": "Queued. Thank you.",
        }
        return self.scripted() or Reply.json(200, queued)


# -- Amazon SES v2 ----------------------------------------------------------------

SES_ERROR_TYPE = "{}:http://internal.amazon.com/coral/com.amazon.coral.service/"


class SESFake(FakeESP):
    name = "ses"

    def __init__(
        self,
        access_key: str = "AKIDEXAMPLE",
        secret_key: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region: str = "eu-west-1",
        session_token: str | None = None,
    ) -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.session_token = session_token
        self.sending_enabled = True

    @staticmethod
    def error(status: int, code: str, message: str) -> Reply:
        return Reply.json(
            status, {"message": message}, {"x-amzn-ErrorType": SES_ERROR_TYPE.format(code)}
        )

    def script_error(self, status: int, code: str, message: str, **headers: str) -> None:
        self.script(
            status,
            {"message": message},
            headers={"x-amzn-ErrorType": SES_ERROR_TYPE.format(code), **headers},
        )

    def signature_problem(self, request: Recorded) -> Reply | None:
        """Recompute the SigV4 signature independently, with botocore."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        auth = request.headers.get("authorization", "")
        match = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            auth,
        )
        if match is None:
            return self.error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        key, date, region, service, signed, signature = match.groups()
        if key != self.access_key:
            return self.error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        amz_date = request.headers.get("x-amz-date", "")
        names = signed.split(";")
        if service != "ses" or region != self.region or not amz_date.startswith(date):
            return self.error(
                403, "InvalidSignatureException", "Credential should be scoped correctly."
            )
        if "host" not in names or "x-amz-date" not in names:
            return self.error(
                403, "IncompleteSignatureException", "Host and X-Amz-Date must be signed."
            )
        if self.session_token and (
            request.headers.get("x-amz-security-token") != self.session_token
            or "x-amz-security-token" not in names
        ):
            return self.error(403, "UnrecognizedClientException", "The security token is invalid.")
        url = f"http://{request.headers['host']}{request.path}" + (
            f"?{request.query}" if request.query else ""
        )
        aws = AWSRequest(request.method, url, {n: request.headers[n] for n in names}, request.body)
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(self.access_key, self.secret_key, self.session_token), "ses", self.region
        )
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if signature != expected:
            return self.error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match.",
            )
        return None

    def handle(self, request: Recorded) -> Reply:
        problem = self.signature_problem(request)
        if problem is not None:
            return problem
        if (request.method, request.path) == ("GET", "/v2/email/account"):
            quota = {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 12.0}
            account = {
                "SendingEnabled": self.sending_enabled,
                "SendQuota": quota,
                "EnforcementStatus": "HEALTHY",
            }
            return self.scripted() or Reply.json(200, account)
        if (request.method, request.path) != ("POST", "/v2/email/outbound-emails"):
            return self.error(404, "NotFoundException", "Resource not found")
        body = request.json()
        allowed = {
            "FromEmailAddress",
            "Destination",
            "Content",
            "ConfigurationSetName",
            "EmailTags",
            "ReplyToAddresses",
        }
        dest = body.get("Destination", {})
        raw = body.get("Content", {}).get("Raw", {}).get("Data")
        if set(body) - allowed or not isinstance(body.get("FromEmailAddress"), str):
            return self.error(400, "BadRequestException", "Invalid request fields")
        if not any(dest.get(k) for k in ("ToAddresses", "CcAddresses", "BccAddresses")):
            return self.error(400, "BadRequestException", "Destination is required")
        if not is_base64(raw) or not raw:
            return self.error(400, "BadRequestException", "Content.Raw.Data must be base64")
        message_id = f"0100018d-{self.next_id():04d}-4f2a-9c1e-000000"
        return self.scripted() or Reply.json(200, {"MessageId": message_id})


# -- Postmark ---------------------------------------------------------------------

POSTMARK_KEYS = frozenset(
    {"From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo", "Headers",
     "TrackOpens", "TrackLinks", "Metadata", "Attachments", "MessageStream"}
)  # fmt: skip


class PostmarkFake(FakeESP):
    name = "postmark"

    def __init__(self, server_token: str = "pm-server-token") -> None:
        super().__init__()
        self.server_token = server_token

    @staticmethod
    def error(status: int, code: int, message: str) -> Reply:
        return Reply.json(status, {"ErrorCode": code, "Message": message})

    def handle(self, request: Recorded) -> Reply:
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return self.error(401, 10, "Request does not contain a valid Server token.")
        if "application/json" not in request.headers.get("accept", ""):
            return self.error(406, 0, "Accept: application/json is required")
        if (request.method, request.path) == ("GET", "/server"):
            return self.scripted() or Reply.json(200, {"ID": 1, "Name": "Postroom Test"})
        if (request.method, request.path) != ("POST", "/email"):
            return self.error(404, 0, "Not found")
        if request.headers.get("content-type") != "application/json":
            return self.error(415, 0, "Content-Type must be application/json")
        body = request.json()
        recipients = sum(
            len(body.get(k, "").split(",")) for k in ("To", "Cc", "Bcc") if body.get(k)
        )
        if set(body) - POSTMARK_KEYS:
            return self.error(422, 403, f"Incompatible JSON: {sorted(set(body) - POSTMARK_KEYS)}")
        if not body.get("From") or not body.get("To") or recipients > 50:
            return self.error(422, 300, "Invalid email request: From and To are required")
        if not (body.get("TextBody") or body.get("HtmlBody")):
            return self.error(422, 300, "Provide either email TextBody or HtmlBody or both.")
        for h in body.get("Headers", []):
            if set(h) != {"Name", "Value"}:
                return self.error(422, 300, "Headers must be [{Name, Value}]")
        for a in body.get("Attachments", []):
            if not a.get("Name") or not is_base64(a.get("Content")) or not a.get("ContentType"):
                return self.error(422, 300, "Attachments need Name, base64 Content, ContentType")
        if any(not isinstance(v, str) for v in body.get("Metadata", {}).values()):
            return self.error(422, 300, "Metadata values must be strings")
        sent = {
            "To": body["To"],
            "SubmittedAt": "2026-01-01T10:00:00.0000000-05:00",
            "MessageID": f"b7bc2f4a-e38e-4336-af7d-e6c3924{self.next_id():05d}",
            "ErrorCode": 0,
            "Message": "OK",
        }
        return self.scripted() or Reply.json(200, sent)


# -- custom endpoint --------------------------------------------------------------


class CustomFake(FakeESP):
    name = "custom"
    path = "/hooks/postroom"

    def __init__(self, secret: str = "whsec-test") -> None:
        super().__init__()
        self.secret = secret

    def handle(self, request: Recorded) -> Reply:
        import hashlib
        import hmac

        header = request.headers.get("x-postroom-signature", "")
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
        if match is None:
            return Reply.json(401, {"error": "missing signature"})
        mac = hmac.new(
            self.secret.encode(), match.group(1).encode() + b"." + request.body, hashlib.sha256
        )
        if not hmac.compare_digest(mac.hexdigest(), match.group(2)):
            return Reply.json(401, {"error": "bad signature"})
        if (request.method, request.path) == ("GET", "/health"):
            return self.scripted() or Reply.json(200, {"ok": True})
        if (request.method, request.path) != ("POST", self.path):
            return Reply.json(404, {"error": "not found"})
        return self.scripted() or Reply.json(200, {"id": f"rcv-{self.next_id()}"})
