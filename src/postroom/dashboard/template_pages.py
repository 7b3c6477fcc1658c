"""The templates pages: list, one template with its versions, the editor, delete.

Everything goes through ``TemplateStore`` and ``Version``, the same code as the
``/templates`` API, so a template saved here compiles and renders exactly as the
API and the worker will. The editor previews as you type: htmx posts the form to
``/templates/preview``, which compiles and renders the draft and answers with the
subject, the text part and the compile or data problems (part, line, message).
The rendered HTML is never part of a page: ``dashboard.js`` posts the same form
into a sandboxed iframe (``/templates/preview/frame``), answered under the
message viewer's restrictive policy (``messages.frame_policy``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.messages import frame_policy
from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import (
    ByAdmin,
    CurrentSession,
    EditorAction,
    EditorAdminAction,
    Posted,
    SignedIn,
    current_session,
    postroom_of,
)
from postroom.errors import ForbiddenError, MessageError, PostroomError, RequestInvalid
from postroom.schemas.templates import TemplateCreate, TemplatePublic, TemplateUpdate
from postroom.templates import engine
from postroom.templates.variables import Variable, check_declarations
from postroom.templates.versions import TemplateStore, Version
from postroom.types import EmailType

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

TemplateKey = Annotated[str, Path(max_length=255)]
PAGE_SIZE = 25
TYPES = [t.value for t in EmailType]
#: the fields the editor posts back into itself after a refused save
FORM_FIELDS = ("name", "description", "type", "subject", "html", "text", "variables", "data")
#: an unsaved draft has no template id yet
DRAFT_ID = uuid.UUID(int=0)
NOTICES = {"created": "Template created.", "saved": "Template saved.", "deleted": "deleted"}


def store_of(request: Request) -> TemplateStore:
    return postroom_of(request).sender.templates


def _admin(session: Any) -> None:
    if not session.user.is_admin:
        raise ForbiddenError("only an admin may change templates")


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


# -- reading the editor's form ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a draft; ``part`` and ``line`` when the template says where."""

    message: str
    part: str | None = None
    line: int | None = None


def _located(exc: engine.TemplateError) -> Problem:
    """The problem with its place apart (the page shows "Line 2 of html: ...")."""
    where = f"{exc.part or ''} line {exc.line}: " if exc.line is not None else ""
    message = exc.message.removeprefix(where) if where else exc.message
    return Problem(message, part=exc.part, line=exc.line)


def _json(raw: str, field: str, kind: type) -> Any:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MessageError(f"{field}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, kind):
        shape = "a JSON list, [...]" if kind is list else "a JSON object, {...}"
        raise MessageError(f"{field}: give {shape}")
    return value


def _variables(form: dict[str, str]) -> list[dict[str, Any]]:
    raw = _json(form.get("variables", ""), "variables", list) or []
    try:
        declared = [Variable.model_validate(v) for v in raw]
        check_declarations(declared)
    except (ValidationError, ValueError) as exc:
        raise MessageError(f"variables: {_first_error(exc)}") from None
    return [v.model_dump(mode="json", exclude_none=True) for v in declared]


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(_validation_problems(exc))
    return str(exc)


def _validation_problems(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    ]


def _content(form: dict[str, str]) -> dict[str, str | None]:
    # browsers send textarea line breaks as CRLF: store what was typed
    html, text = (form.get(k, "").replace("\r\n", "\n") for k in ("html", "text"))
    return {"html": html if html.strip() else None, "text": text if text.strip() else None}


def _draft(form: dict[str, str]) -> Version:
    content = _content(form)
    return Version(
        template_id=DRAFT_ID,
        version=0,
        subject=form.get("subject", "").replace("\r\n", "\n"),
        content={k: v for k, v in content.items() if v is not None},
        variables=_variables(form),
    )


def render_draft(form: dict[str, str]) -> tuple[engine.Rendered | None, list[Problem]]:
    """The draft compiled and rendered as ``POST /templates/{id}/preview`` renders a
    saved one: with the preview data given, or each variable's example."""
    try:
        version = _draft(form)
        data = _json(form.get("data", ""), "preview data", dict)
        engine.check(version.source)
        return version.preview(data), []
    except engine.TemplateError as exc:
        return None, [_located(exc)]
    except RequestInvalid as exc:
        return None, [Problem(f"{e['field']}: {e['message']}") for e in exc.errors]
    except MessageError as exc:
        return None, [Problem(exc.message)]


def _fields(form: dict[str, str]) -> dict[str, Any]:
    content = _content(form)
    return {
        "name": form.get("name", "").strip(),
        "description": form.get("description", "").strip() or None,
        "type": form.get("type", ""),
        "subject": form.get("subject", "").strip(),
        "content": {k: v for k, v in content.items() if v is not None},
        "variables": _json(form.get("variables", ""), "variables", list) or [],
        "enabled": form.get("enabled") == "on",
    }


def _form_of(t: TemplatePublic) -> dict[str, str]:
    return {
        "name": t.name,
        "description": t.description or "",
        "type": t.type,
        "subject": t.subject,
        "html": t.content.get("html") or "",
        "text": t.content.get("text") or "",
        "variables": json.dumps(t.variables, indent=2) if t.variables else "",
        "enabled": "on" if t.enabled else "",
        "data": "",
    }


def _editor(
    request: Request,
    session: Any,
    form: dict[str, str],
    template: TemplatePublic | None,
    *,
    status: int = 200,
    problems: list[str] | None = None,
) -> Response:
    shown = {k: form.get(k, "") for k in (*FORM_FIELDS, "enabled")}
    rendered, preview_problems = render_draft(shown)
    return page(
        request,
        "template_form.html",
        session,
        status_code=status,
        form=shown,
        template=template,
        types=TYPES,
        problems=problems or [],
        rendered=rendered,
        preview_problems=preview_problems,
    )


# -- pages ------------------------------------------------------------------------------


@router.get("/templates")
async def templates(
    request: Request, session: CurrentSession, done: str = "", name: str = ""
) -> Response:
    found = await store_of(request).list_all()
    number = _page_number(request.query_params.get("page", ""))
    start = (number - 1) * PAGE_SIZE
    notice = f"Template {name} deleted." if done == "deleted" and name else ""
    return page(
        request,
        "templates.html",
        session,
        rows=found[start : start + PAGE_SIZE],
        total=len(found),
        page_number=number,
        has_next=start + PAGE_SIZE < len(found),
        notice=notice,
    )


@router.get("/templates/new")
async def new_form(request: Request) -> Response:
    session = await current_session(request)
    _admin(session)
    form = {"type": "transactional", "enabled": "on", "subject": "", "html": "", "text": ""}
    return _editor(request, session, form, None)


@router.post("/templates/new")
async def create(request: Request, posted: EditorAdminAction) -> Response:
    try:
        created = await store_of(request).create(
            TemplateCreate.model_validate(_fields(posted.form))
        )
    except ValidationError as exc:
        return _refused(request, posted, None, _validation_problems(exc))
    except PostroomError as exc:
        return _refused(request, posted, None, [exc.message])
    return RedirectResponse(f"/templates/{created.id}?done=created", 303)


def _refused(
    request: Request, posted: Posted, template: TemplatePublic | None, problems: list[str]
) -> Response:
    return _editor(request, posted.session, posted.form, template, status=422, problems=problems)


@router.post("/templates/preview")
async def preview(request: Request, posted: EditorAction) -> Response:
    """The live preview's fragment: subject, text and problems (htmx swaps it in)."""
    rendered, problems = render_draft(posted.form)
    return page(
        request,
        "template_preview.html",
        posted.session,
        rendered=rendered,
        preview_problems=problems,
    )


@router.post("/templates/preview/frame")
async def preview_frame(posted: EditorAction) -> Response:
    """The draft's HTML alone, for the editor's sandboxed iframe."""
    rendered, problems = render_draft(posted.form)
    return _frame(rendered, problems)


def _frame(rendered: engine.Rendered | None, problems: list[Problem]) -> Response:
    if rendered is None:
        body = "<p>" + escape("; ".join(p.message for p in problems)) + "</p>"
    elif rendered.html is None:
        body = "<p>This template has no HTML part.</p>"
    else:
        body = '<base target="_blank">' + rendered.html
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": frame_policy(False),
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


async def _version(request: Request, key: str, raw: str) -> tuple[TemplatePublic, Version]:
    store = store_of(request)
    current = await store.get(key)
    number = int(raw) if raw.isdigit() and 0 < int(raw) <= current.version else current.version
    return current, await store.load_public(current.id, number)


@router.get("/templates/{key}")
async def template(
    request: Request, session: CurrentSession, key: TemplateKey, version: str = "", done: str = ""
) -> Response:
    current, shown = await _version(request, key, version)
    try:
        rendered, problems = shown.preview(None), []
    except MessageError as exc:
        errors = exc.errors if isinstance(exc, RequestInvalid) else None
        rendered = None
        problems = (
            [Problem(f"{e['field']}: {e['message']}") for e in errors]
            if errors
            else [Problem(exc.message)]
        )
    return page(
        request,
        "template.html",
        session,
        t=current,
        shown=shown,
        versions=await store_of(request).versions(current.id),
        rendered=rendered,
        preview_problems=problems,
        notice=NOTICES.get(done, "") if done != "deleted" else "",
    )


@router.get("/templates/{key}/frame", dependencies=[SignedIn])
async def frame(request: Request, key: TemplateKey, version: str = "") -> Response:
    """A saved version rendered with its examples, for the template page's iframe."""
    _, shown = await _version(request, key, version)
    try:
        return _frame(shown.preview(None), [])
    except MessageError as exc:
        return _frame(None, [Problem(exc.message)])


@router.get("/templates/{key}/edit")
async def edit_form(request: Request, key: TemplateKey) -> Response:
    session = await current_session(request)
    _admin(session)
    found = await store_of(request).get(key)
    if found.archived_at is not None:
        raise MessageError("this template was deleted; create a new one")
    return _editor(request, session, _form_of(found), found)


@router.post("/templates/{key}/edit")
async def update(request: Request, key: TemplateKey, posted: EditorAdminAction) -> Response:
    store = store_of(request)
    found = await store.get(key)
    try:
        saved = await store.update(key, TemplateUpdate.model_validate(_fields(posted.form)))
    except ValidationError as exc:
        return _refused(request, posted, found, _validation_problems(exc))
    except PostroomError as exc:
        return _refused(request, posted, found, [exc.message])
    return RedirectResponse(f"/templates/{saved.id}?done=saved", 303)


@router.post("/templates/{key}/delete", dependencies=[ByAdmin])
async def delete(request: Request, key: TemplateKey) -> Response:
    """Archive, as ``DELETE /templates/{id}``: versions stay for mail already queued."""
    store = store_of(request)
    found = await store.get(key)
    await store.delete(found.id)
    return RedirectResponse("/templates?" + urlencode({"done": "deleted", "name": found.name}), 303)
