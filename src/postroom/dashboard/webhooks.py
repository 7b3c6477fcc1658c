"""The webhooks page: outgoing event webhook endpoints, their delivery log, redelivery.

It uses ``Endpoints`` (``postroom.webhooks``), the service behind
``/webhooks/endpoints``, and checks a new endpoint with the API's own body model
(``EndpointCreate``) before the service checks its URL against the egress guard,
so the dashboard accepts and refuses exactly what the API does. The one rule of
its own is the form's: "every event" or at least one ticked type, since an empty
form would otherwise subscribe to everything unasked.

A signing secret is in the answer to the POST that made it alone (create, rotate;
``Cache-Control: no-store``), never in a URL or a redirect, and only an admin can
send those POSTs.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.render import DashboardRoute, cursor_pages, page, parsed_time
from postroom.dashboard.security import AdminAction, ByAdmin, CurrentSession, postroom_of
from postroom.db.engine import reader
from postroom.errors import Conflict, RequestInvalid
from postroom.events.catalog import EVENT_TYPES
from postroom.events.endpoints import Endpoints, deliveries_t, endpoints_t
from postroom.schemas.webhook_endpoints import EndpointCreate
from postroom.services.users import Session

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 50
#: a ticked event type arrives as ``type_email.sent=on``
TYPE_FIELD = "type_"
STATES = ("pending", "delivering", "delivered", "failed")
NOTICES = {
    "deleted": "The endpoint {} was deleted, with its delivery log.",
    "enabled": "The endpoint is enabled: new events are sent to it.",
    "disabled": "The endpoint is disabled: no events are recorded for it until it is enabled.",
    "redelivered": "The delivery is queued to be sent again now.",
}
EndpointId = Annotated[uuid.UUID, Path()]


def store_of(request: Request) -> Endpoints:
    return postroom_of(request).webhooks


async def _latest(request: Request, ids: list[str]) -> dict[str, Any]:
    """Each endpoint's newest delivery (status, code, time), in one query: the newest
    id of each endpoint on the page (one short walk of the (endpoint_id, created_at)
    index each), then those rows by primary key."""
    if not ids:
        return {}
    d = deliveries_t.alias("newest")
    e = endpoints_t.c
    newest = (
        select(d.c.id)
        .where(d.c.endpoint_id == e.id)
        .order_by(d.c.created_at.desc(), d.c.id.desc())
        .limit(1)
        .correlate(endpoints_t)
        .scalar_subquery()
    )
    newest_of_each = select(newest).where(e.id.in_([uuid.UUID(i) for i in ids]))
    c = deliveries_t.c
    stmt = select(c.endpoint_id, c.status, c.last_status_code, c.created_at).where(
        c.id.in_(newest_of_each)
    )
    async with reader(postroom_of(request).engine).connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {str(r.endpoint_id): r for r in rows}


async def _render_list(
    request: Request,
    session: Session,
    *,
    cursor: str = "",
    status: int = 200,
    **extra: object,
) -> Response:
    found = await store_of(request).list_page(limit=PAGE_SIZE, cursor=cursor or None)
    latest = await _latest(request, [e["id"] for e in found["endpoints"]])
    rows = [
        {**e, "createdAt": parsed_time(e["createdAt"]), "latest": latest.get(e["id"])}
        for e in found["endpoints"]
    ]
    extra.setdefault("form", _blank_form())
    return page(
        request,
        "webhooks.html",
        session,
        status_code=status,
        rows=rows,
        **cursor_pages({}, cursor, found["nextCursor"]),
        event_types=EVENT_TYPES,
        errors=extra.pop("errors", {}),
        **extra,
    )


def _blank_form() -> dict[str, Any]:
    return {"url": "", "description": "", "allowNetworks": "", "events": "", "types": []}


@router.get("/webhooks")
async def webhooks(
    request: Request, session: CurrentSession, cursor: str = "", done: str = "", url: str = ""
) -> Response:
    notice = NOTICES[done].format(url) if done == "deleted" and url else ""
    return await _render_list(request, session, cursor=cursor, notice=notice)


def _body_of(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body the form stands for, and the form's own problems."""
    types = [k.removeprefix(TYPE_FIELD) for k in form if k.startswith(TYPE_FIELD)]
    errors: dict[str, str] = {}
    every = form.get("events") == "all"
    if "events" in form and not every:
        errors["eventTypes"] = f"events: {form['events']!r} is not 'all'"
    elif every and types:
        errors["eventTypes"] = "choose either every event or the types ticked, not both"
    elif not every and not types:
        errors["eventTypes"] = "tick at least one event type, or every event"
    description = form.get("description", "").strip()
    body = {
        "url": form.get("url", "").strip(),
        "description": description or None,
        "eventTypes": types,
        "enabled": form.get("enabled") == "on",
        "allowNetworks": [n for n in re.split(r"[\s,]+", form.get("allowNetworks", "")) if n],
    }
    return body, errors


def _problems(exc: ValidationError) -> dict[str, str]:
    """The model's errors by field, said for a form rather than for JSON."""
    errors: dict[str, str] = {}
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else "form"
        if field == "url" and e["type"] == "string_pattern_mismatch":
            message = "give an http:// or https:// URL with a host name"
        elif field in ("eventTypes", "allowNetworks") and len(e["loc"]) > 1:
            message = f"{e['input']!r}: {e['msg']}"
        else:
            message = e["msg"]
        errors.setdefault(field, message)
    return errors


@router.post("/webhooks")
async def create(request: Request, posted: AdminAction) -> Response:
    form = posted.form
    body, errors = _body_of(form)
    shown = {
        "url": form.get("url", ""),
        "description": form.get("description", ""),
        "allowNetworks": form.get("allowNetworks", ""),
        "events": form.get("events", ""),
        "types": body["eventTypes"],
        "enabled": body["enabled"],
    }
    try:
        checked = EndpointCreate.model_validate(body)
    except ValidationError as exc:
        return await _refused(request, posted.session, shown, {**_problems(exc), **errors})
    if errors:
        return await _refused(request, posted.session, shown, errors)
    try:
        created = await store_of(request).create(
            url=checked.url,
            description=checked.description,
            event_types=checked.event_types,
            enabled=checked.enabled,
            allow_networks=checked.allow_networks,
        )
    except RequestInvalid as exc:
        return await _refused(
            request, posted.session, shown, {e["field"]: e["message"] for e in exc.errors}
        )
    return await _render_list(request, posted.session, created=created)


async def _refused(
    request: Request, session: Session, form: dict[str, Any], errors: dict[str, str]
) -> Response:
    return await _render_list(request, session, status=422, form=form, errors=errors)


async def _render_endpoint(
    request: Request,
    session: Session,
    endpoint_id: uuid.UUID,
    *,
    state: str = "",
    cursor: str = "",
    status: int = 200,
    **extra: object,
) -> Response:
    store = store_of(request)
    endpoint = await store.get(endpoint_id)
    log = await store.deliveries(
        endpoint_id, status=state or None, limit=PAGE_SIZE, cursor=cursor or None
    )
    deliveries = [
        {
            **d,
            "createdAt": parsed_time(d["createdAt"]),
            "nextAttemptAt": parsed_time(d["nextAttemptAt"]),
            "attemptLog": [
                {**a, "startedAt": parsed_time(a["startedAt"])} for a in d["attemptLog"]
            ],
        }
        for d in log["deliveries"]
    ]
    query = {"status": state} if state else {}
    return page(
        request,
        "webhook.html",
        session,
        status_code=status,
        e={**endpoint, "createdAt": parsed_time(endpoint["createdAt"])},
        deliveries=deliveries,
        state=state,
        states=STATES,
        **cursor_pages(query, cursor, log["nextCursor"]),
        **extra,
    )


@router.get("/webhooks/{endpoint_id}")
async def endpoint(
    request: Request,
    session: CurrentSession,
    endpoint_id: EndpointId,
    status: Literal["", "pending", "delivering", "delivered", "failed"] = "",
    cursor: str = "",
    done: str = "",
) -> Response:
    notice = NOTICES[done] if done in NOTICES and done != "deleted" else ""
    return await _render_endpoint(
        request, session, endpoint_id, state=status, cursor=cursor, notice=notice
    )


@router.post("/webhooks/{endpoint_id}/enable", dependencies=[ByAdmin])
async def enable(request: Request, endpoint_id: EndpointId) -> Response:
    await store_of(request).update(endpoint_id, {"enabled": True})
    return RedirectResponse(f"/webhooks/{endpoint_id}?done=enabled", 303)


@router.post("/webhooks/{endpoint_id}/disable", dependencies=[ByAdmin])
async def disable(request: Request, endpoint_id: EndpointId) -> Response:
    await store_of(request).update(endpoint_id, {"enabled": False})
    return RedirectResponse(f"/webhooks/{endpoint_id}?done=disabled", 303)


@router.post("/webhooks/{endpoint_id}/rotate")
async def rotate(request: Request, posted: AdminAction, endpoint_id: EndpointId) -> Response:
    rotated = await store_of(request).rotate_secret(endpoint_id)
    return await _render_endpoint(request, posted.session, endpoint_id, secret=rotated["secret"])


@router.post("/webhooks/{endpoint_id}/delete", dependencies=[ByAdmin])
async def delete(request: Request, endpoint_id: EndpointId) -> Response:
    store = store_of(request)
    url = (await store.get(endpoint_id))["url"]
    await store.delete(endpoint_id)
    return RedirectResponse("/webhooks?" + urlencode({"done": "deleted", "url": url}), 303)


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request,
    posted: AdminAction,
    endpoint_id: EndpointId,
    delivery_id: Annotated[uuid.UUID, Path()],
) -> Response:
    try:
        await store_of(request).redeliver(endpoint_id, delivery_id)
    except Conflict as exc:
        return await _render_endpoint(
            request, posted.session, endpoint_id, status=409, error=exc.message
        )
    return RedirectResponse(f"/webhooks/{endpoint_id}?done=redelivered", 303)
