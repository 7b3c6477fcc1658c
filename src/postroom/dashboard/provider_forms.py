"""Adding and editing a provider.

``config`` and ``limits`` are edited as JSON, as the API takes them. Credentials
are write-only: the edit form never shows them (not even masked), it names the
stored keys and a new JSON object replaces them; left empty, they are kept. The
service validates everything the way a worker will use it, and a refusal is shown
above the form with what was typed (credentials excepted).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.providers import ProviderKey, service_of
from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import AdminAction, Posted, current_session
from postroom.errors import ForbiddenError, MessageError, PostroomError
from postroom.providers.registry import ADAPTERS
from postroom.schemas.providers import ProviderCreate, ProviderUpdate

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

#: types an operator can choose (``fake`` is a test double)
TYPES = sorted(t for t in ADAPTERS if t != "fake")


def _json_object(raw: str, field: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MessageError(f"{field}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise MessageError(f"{field}: give a JSON object, {{...}}")
    return value


def _fields(form: dict[str, str]) -> dict[str, Any]:
    raw_priority = form.get("priority", "").strip()
    if not raw_priority.isdigit():
        raise MessageError("priority: a whole number, higher is tried first")
    fields: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "type": form.get("type", ""),
        "priority": int(raw_priority),
        "enabled": form.get("enabled") == "on",
    }
    for key in ("config", "limits", "authentication"):
        value = _json_object(form.get(key, ""), key)
        if value is not None:
            fields[key] = value
    return fields


def _problem(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
    )


def _form_page(
    request: Request, posted: Posted | None, session: Any, *, status: int = 200, **ctx: Any
) -> Response:
    form = posted.form if posted else ctx.pop("form", {})
    form = {k: v for k, v in form.items() if k not in ("authentication", "csrf_token")}
    return page(
        request, "provider_form.html", session, status_code=status, types=TYPES, form=form, **ctx
    )


def _admin(session: Any) -> None:
    if not session.user.is_admin:
        raise ForbiddenError("only an admin may change providers")


@router.get("/providers/new")
async def new_form(request: Request) -> Response:
    session = await current_session(request)
    _admin(session)
    form = {"type": "smtp", "priority": "100", "enabled": "on", "config": "{}", "limits": "{}"}
    return _form_page(request, None, session, form=form, provider=None)


@router.post("/providers/new")
async def create(request: Request, posted: AdminAction) -> Response:
    try:
        data = ProviderCreate.model_validate(_fields(posted.form))
        created = await service_of(request).create(data)
    except ValidationError as exc:
        return _form_page(
            request, posted, posted.session, status=422, provider=None, error=_problem(exc)
        )
    except PostroomError as exc:
        return _form_page(
            request, posted, posted.session, status=422, provider=None, error=exc.message
        )
    return RedirectResponse(f"/providers#p-{created.id}", 303)


@router.get("/providers/{provider}/edit")
async def edit_form(request: Request, provider: ProviderKey) -> Response:
    session = await current_session(request)
    _admin(session)
    found = await service_of(request).get(provider)
    form = {
        "name": found.name,
        "type": found.type,
        "priority": str(found.priority),
        "enabled": "on" if found.enabled else "",
        "config": json.dumps(found.config, indent=2),
        "limits": json.dumps(found.limits, indent=2),
    }
    return _form_page(request, None, session, form=form, provider=found)


@router.post("/providers/{provider}/edit")
async def update(request: Request, provider: ProviderKey, posted: AdminAction) -> Response:
    service = service_of(request)
    found = await service.get(provider)
    try:
        fields = _fields(posted.form)
        fields.setdefault("config", {})
        fields.setdefault("limits", {})
        saved = await service.update(provider, ProviderUpdate.model_validate(fields))
    except ValidationError as exc:
        return _form_page(
            request, posted, posted.session, status=422, provider=found, error=_problem(exc)
        )
    except PostroomError as exc:
        return _form_page(
            request, posted, posted.session, status=422, provider=found, error=exc.message
        )
    query = urlencode({"done": "saved", "provider": saved.name})
    return RedirectResponse(f"/providers?{query}", 303)
