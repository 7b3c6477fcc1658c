"""Raw MIME: checked and completed when accepted, sent as stored.

Mail that arrives already composed (SMTP submissions, ``POST /send/raw``) is not
rebuilt: its bytes are what the client wrote, so a signature or a hand-made
structure survives. When it is accepted, :func:`prepare` reads the header block
only (no full MIME parse: the relay accepts thousands of messages a second),
refuses what would be unsafe to relay, and makes three changes:

- line endings become CRLF (a bare CR in the header block is refused: it is how
  header injection hides);
- ``Bcc`` fields are removed: blind recipients live in the envelope only;
- ``Message-ID`` and ``Date`` are added when missing.

At send time :func:`outgoing` turns the stored job into an ``OutgoingMessage``
whose ``mime`` is those bytes. DKIM signing and tracking rewrites, when they
exist, hook in there, on the same ``OutgoingMessage`` as composed API mail.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from typing import Any, cast

from postroom.compose import tracking_rewrite, unsubscribe
from postroom.errors import MessageError
from postroom.providers.base import Address, Attachment, OutgoingMessage
from postroom.tracking.context import TrackingContext
from postroom.types import EmailType

CRLF = b"\r\n"
#: RFC 5322 field name: printable ASCII except colon
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")
#: NUL and bare CR have no place in a header block
_BAD_HEADER_BYTES = re.compile(rb"[\x00\r]")
#: the field names of a header block
_FIELD_NAMES = re.compile(rb"(?m)^([!-9;-~]+):")


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepared:
    """A raw message checked, completed and ready to store."""

    mime: bytes
    message_id: str
    #: the address in the From field
    header_from: str
    #: the addresses in the To, Cc and Bcc fields (Bcc as given, before its removal)
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str


def _crlf(raw: bytes) -> bytes:
    if raw.count(b"\n") == raw.count(CRLF):  # no bare LF: counted without a copy
        return raw
    return raw.replace(CRLF, b"\n").replace(b"\n", CRLF)


def split(raw: bytes) -> tuple[bytes, bytes]:
    """The header block (without its blank line) and the body."""
    if raw.startswith(CRLF):
        return b"", raw[2:]
    head, sep, body = raw.partition(CRLF + CRLF)
    if not sep:
        return raw.removesuffix(CRLF), b""
    return head, body


def fields(head: bytes) -> list[tuple[str, bytes]]:
    """``(lowercase name, raw lines including the name)`` per header field, in order."""
    out: list[tuple[str, bytes]] = []
    # one look at the whole block; the line is found only when there is something
    suspect = b"\0" in head or head.count(b"\r") != head.count(CRLF)
    for number, line in enumerate(head.split(CRLF), start=1):
        if suspect and _BAD_HEADER_BYTES.search(line):
            raise MessageError(f"header line {number} contains a NUL or a bare CR")
        if line[:1] in (b" ", b"\t"):
            if not out:
                raise MessageError("the message starts with a continuation line")
            previous, lines = out[-1]
            out[-1] = (previous, lines + CRLF + line)
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name):
            raise MessageError(f"header line {number} is not a 'Name: value' field")
        out.append((name.decode("ascii").lower(), line))
    return out


def field_value(lines: bytes) -> str:
    """A field's unfolded value as text (RFC 2047 words decoded where possible)."""
    value = lines.partition(b":")[2].replace(CRLF, b"").strip()
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError):
        return text


#: one plain address, optionally with a simple display name: the common case, parsed fast
_SIMPLE_ADDRESS = re.compile(
    r'^\s*(?:[^<>",;:()\\@]*<)?([^<>\s",;:()\\@]+@[^<>\s",;:()\\@]+)>?\s*$'
)


def _addresses(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        simple = _SIMPLE_ADDRESS.match(value)
        if simple and (("<" in value) == value.rstrip().endswith(">")):
            out.append(simple.group(1))
        else:
            out.extend(addr for _, addr in getaddresses([value]) if addr)
    return tuple(out)


def prepare(raw: bytes, *, message_id: Callable[[str], str], now: datetime) -> Prepared:
    """Check ``raw`` and complete it; ``message_id(from address)`` is used when it has none.

    Raises:
        MessageError: the header block is malformed or has no From field.
    """
    raw = _crlf(raw)
    head, body = split(raw)
    whole = len(head) + 4 + len(body) == len(raw)  # raw is head, a blank line, body
    parsed = fields(head)
    by_name: dict[str, list[bytes]] = {}
    for name, lines in parsed:
        by_name.setdefault(name, []).append(lines)
    senders = _addresses([field_value(v) for v in by_name.get("from", [])])
    if not senders:
        raise MessageError("the message has no From address")
    for unique in ("from", "subject", "message-id", "date"):
        if len(by_name.get(unique, ())) > 1:
            raise MessageError(f"the message has more than one {unique.title()} field")
    added: list[bytes] = []
    if "message-id" in by_name:
        msg_id = field_value(by_name["message-id"][0])
    else:
        msg_id = message_id(senders[0])
        added.append(f"Message-ID: {msg_id}".encode())
    if "date" not in by_name:
        added.append(f"Date: {format_datetime(now.replace(microsecond=0))}".encode())
    if "bcc" in by_name or not whole:
        kept = [lines for name, lines in parsed if name != "bcc"]
        mime = CRLF.join([*added, *kept]) + CRLF + CRLF + body
    else:  # the same bytes, without joining the message together again
        mime = CRLF.join([*added, b""]) + raw if added else raw
    subject = field_value(by_name["subject"][0]) if "subject" in by_name else ""
    return Prepared(
        mime=mime,
        message_id=msg_id,
        header_from=senders[0],
        to=_addresses([field_value(v) for v in by_name.get("to", [])]),
        cc=_addresses([field_value(v) for v in by_name.get("cc", [])]),
        bcc=_addresses([field_value(v) for v in by_name.get("bcc", [])]),
        subject=subject,
    )


def outgoing(email_id: str, data: Mapping[str, Any]) -> OutgoingMessage:
    """The ``OutgoingMessage`` of a stored raw job: its bytes, sent as they are.

    Providers that send MIME (SMTP, SES, Mailgun, custom, file) use ``mime`` and
    the envelope; the structured fields (text, html, attachments) are read back
    from the MIME for ESPs whose APIs take JSON.
    """
    raw = data["raw"]
    request = data["request"]
    mime = base64.b64decode(raw["mime"])
    groups: dict[str, list[Address]] = {"to": [], "cc": [], "bcc": []}
    for rcpt in request["to"]:
        groups[rcpt.get("type", "to")].append(Address(email=rcpt["email"]))
    text, html, attachments = _content(mime)
    return OutgoingMessage(
        email_id=email_id,
        message_id=raw["messageId"],
        from_=Address(email=raw["mailFrom"]),
        to=tuple(groups["to"]),
        cc=tuple(groups["cc"]),
        bcc=tuple(groups["bcc"]),
        subject=request.get("subject", ""),
        text=text,
        html=html,
        attachments=attachments,
        metadata=request.get("metadata") or {},
        mime=mime,
    )


def _content(mime: bytes) -> tuple[str | None, str | None, tuple[Attachment, ...]]:
    msg = BytesParser(policy=policy.default).parsebytes(mime)
    try:
        plain = msg.get_body(preferencelist=("plain",))
        rich = msg.get_body(preferencelist=("html",))
        text = cast(str, plain.get_content()) if plain is not None else None
        html = cast(str, rich.get_content()) if rich is not None else None
        attachments = tuple(
            Attachment(
                filename=part.get_filename() or "attachment",
                content=cast(bytes, part.get_payload(decode=True) or b""),
                content_type=part.get_content_type(),
            )
            for part in msg.iter_attachments()
        )
    except (LookupError, ValueError, AttributeError, TypeError):
        # an odd structure still goes out as MIME; only JSON ESPs lose the body
        return None, None, ()
    return text, html, attachments


def tracked(
    message: OutgoingMessage,
    request: Mapping[str, Any],
    ctx: TrackingContext,
    now: datetime,
) -> OutgoingMessage:
    """``message`` with tracking as composed mail gets it, when its type or flags ask:
    links in its HTML parts rewritten, the open pixel added, and for marketing mail
    the one-click ``List-Unsubscribe`` headers unless it has its own.

    Left as received when nothing applies, and when the client signed the message
    itself (a ``DKIM-Signature`` present): changing it would break that signature.
    """
    rewrite_html = ctx.wants(request, "opens") or ctx.wants(request, "clicks")
    if message.mime is None or not (rewrite_html or request.get("type") == EmailType.MARKETING):
        return message  # the usual case (relay mail is transactional): nothing to scan
    head_end = message.mime.find(b"\r\n\r\n")
    head = message.mime[: head_end if head_end >= 0 else len(message.mime)]
    if re.search(rb"(?im)^dkim-signature:", head):
        return message
    email_id = message.email_id
    existing = {m.decode("ascii", "replace"): "" for m in _FIELD_NAMES.findall(head)}
    added = unsubscribe.headers(email_id, request, existing, ctx, now)
    if not rewrite_html and not added:
        return message
    msg: EmailMessage = BytesParser(policy=policy.SMTP).parsebytes(message.mime)
    html: str | None = message.html
    changed = False
    if rewrite_html:
        for part in msg.walk():
            if part.get_content_type() != "text/html" or part.is_attachment():
                continue
            before = cast(str, part.get_content())
            after = tracking_rewrite.rewrite(before, email_id, request, ctx, now)
            if after != before:
                charset = part.get_content_charset() or "utf-8"
                part.set_content(after, subtype="html", charset=charset, cte="quoted-printable")
                html, changed = after, True
    for name, value in added.items():
        msg[name] = value
        changed = True
    if not changed:
        return message
    return dataclasses.replace(message, mime=msg.as_bytes(policy=policy.SMTP), html=html)
