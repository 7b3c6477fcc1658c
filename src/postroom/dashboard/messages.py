"""The message log, one message's page, and the outbox viewer.

Email HTML is never part of a dashboard page. It is served alone, at
``/messages/{id}/frame``, with its own Content-Security-Policy: ``sandbox`` (no
scripts, no forms, an opaque origin, even when the URL is opened directly), no
script or connection sources, inline styles only, and images from ``data:`` only
until the reader asks for remote ones (``?images=1``), so opening a message does
not tell its sender. The page shows it in an ``<iframe sandbox>`` as well.
Attachments are always downloads (``Content-Disposition: attachment``), never
rendered in the dashboard's origin.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import CurrentSession, SignedIn, postroom_of
from postroom.errors import MessageError, NotFound
from postroom.services import status as status_service
from postroom.services.messages import STATUS_FILTER, MessageLog, Search
from postroom.services.users import Session

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

EmailId = Annotated[str, Path(max_length=64)]
VIEWS = ("html", "text", "headers", "raw", "attachments")
#: raw source shown in the page up to this size (the .eml download has all of it)
RAW_LIMIT = 512 * 1024


def frame_policy(remote_images: bool) -> str:
    images = "data: https: http:" if remote_images else "data:"
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; font-src data:; "
        "sandbox allow-popups allow-popups-to-escape-sandbox; frame-ancestors 'self'"
    )


def _log(request: Request) -> MessageLog:
    pr = postroom_of(request)
    return MessageLog(
        pr.engine,
        data_dir=pr.settings.data_dir,
        message_id_domain=pr.settings.message_id_domain,
    )


def _day(raw: str, label: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise MessageError(f"{label}: give a date as YYYY-MM-DD") from None


# -- the log ---------------------------------------------------------------------------


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


async def _list(request: Request, session: Session, search: Search, *, outbox: bool) -> Response:
    log = _log(request)
    found = await log.search(search)
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return page(
        request,
        "messages.html",
        session,
        found=found,
        providers=await log.providers(),
        statuses=list(STATUS_FILTER),
        form=query,
        query=urlencode(query),
        filtered=bool(query),
        outbox=outbox,
    )


@router.get("/outbox")
async def outbox(request: Request, session: CurrentSession) -> Response:
    """What the development outbox (``file`` providers) received, newest first."""
    search = Search(provider_type="file", page=_page_number(request.query_params.get("page", "")))
    return await _list(request, session, search, outbox=True)


@router.get("/messages")
async def messages(
    request: Request,
    session: CurrentSession,
    recipient: str = "",
    subject: str = "",
    status: str = "",
    provider: str = "",
    tag: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    if status and status not in STATUS_FILTER:
        raise MessageError(f"status: one of {', '.join(STATUS_FILTER)}")
    search = Search(
        recipient=recipient.strip(),
        subject=subject.strip(),
        status=status,
        provider=provider,
        tag=tag.strip(),
        day_from=_day(since, "since"),
        day_to=_day(until, "until"),
        page=_page_number(request.query_params.get("page", "")),
    )
    return await _list(request, session, search, outbox=False)


# -- one message -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    index: int
    filename: str
    content_type: str
    size: int


def _parse(mime: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _body(msg: EmailMessage, kind: str) -> str | None:
    part = msg.get_body(preferencelist=(kind,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown or lying charset: show what we can
        raw = part.get_payload(decode=True)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None
    return content if isinstance(content, str) else None


def _attachments(msg: EmailMessage) -> list[tuple[Part, EmailMessage]]:
    bodies = {id(p) for p in (msg.get_body(("html",)), msg.get_body(("plain",))) if p}
    out: list[tuple[Part, EmailMessage]] = []
    for part in msg.walk():
        if part.is_multipart() or id(part) in bodies or not isinstance(part, EmailMessage):
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        name = part.get_filename() or f"part-{len(out) + 1}"
        out.append((Part(len(out), name, part.get_content_type(), size), part))
    return out


@router.get("/messages/{email_id}")
async def message(
    request: Request,
    session: CurrentSession,
    email_id: EmailId,
    view: str = "html",
    width: str = "desktop",
    images: str = "",
) -> Response:
    pr = postroom_of(request)
    found = await status_service.get_status(pr.engine, email_id)
    log = _log(request)
    stored = await log.stored(found.id)
    events = await log.events(found.id)
    msg = _parse(stored.mime)
    html, text = _body(msg, "html"), _body(msg, "plain")
    if view not in VIEWS:
        view = "html"
    if view == "html" and html is None:
        view = "text"
    raw = stored.mime[:RAW_LIMIT].decode("utf-8", "replace")
    base = {"view": view, "width": width if width == "mobile" else "desktop"}
    return page(
        request,
        "message.html",
        session,
        m=found,
        events=events,
        request_data=stored.request,
        from_outbox=stored.from_outbox,
        view=view,
        width=base["width"],
        images=images == "1",
        html=html,
        text=text,
        headers=list(msg.items()),
        raw=raw,
        raw_truncated=len(stored.mime) > RAW_LIMIT,
        attachments=[p for p, _ in _attachments(msg)],
        link=_linker({**base, **({"images": "1"} if images == "1" else {})}),
    )


def _linker(base: dict[str, str]) -> Callable[..., str]:
    """``link(view="raw")``: this page's URL with some of its options changed."""

    def link(**changes: str) -> str:
        return "?" + urlencode({**base, **changes})

    return link


@router.get("/messages/{email_id}/frame", dependencies=[SignedIn])
async def frame(request: Request, email_id: EmailId, images: str = "") -> Response:
    """The email's HTML alone, under its own restrictive policy."""
    stored = await _log(request).stored(email_id)
    html = _body(_parse(stored.mime), "html")
    if html is None:
        raise NotFound("this message has no HTML part")
    body = '<base target="_blank">' + html
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": frame_policy(images == "1"),
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@router.get("/messages/{email_id}/eml", dependencies=[SignedIn])
async def download(request: Request, email_id: EmailId) -> Response:
    stored = await _log(request).stored(email_id)
    return Response(
        stored.mime,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{stored.id}.eml"'},
    )


@router.get("/messages/{email_id}/attachments/{index}", dependencies=[SignedIn])
async def attachment(request: Request, email_id: EmailId, index: int) -> Response:
    stored = await _log(request).stored(email_id)
    parts = _attachments(_parse(stored.mime))
    if not 0 <= index < len(parts):
        raise NotFound("no such attachment")
    info, part = parts[index]
    payload = part.get_payload(decode=True)
    safe = "".join(c for c in info.filename if c.isalnum() or c in "._- ")[:100] or "attachment"
    return Response(
        payload if isinstance(payload, bytes) else b"",
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
