"""The settings page: the system configuration, and an editor for its runtime part.

It shows ``SystemConfigService.read()``, the ``EmailSystemConfig`` of ``GET /config``
(secrets already masked), and saves through ``SystemConfigService.update``, the
validation of ``PUT /config``: all or nothing, every problem named by its field and
shown beside the input it belongs to. The form sends only what was changed, so a
queue that follows the defaults keeps following them. Typed values are passed on
as typed (a number where one parses), so the service, not the page, judges them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from postroom.analytics import guardrails
from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import AdminAction, CurrentSession, postroom_of
from postroom.errors import RequestInvalid
from postroom.queue.retry import RetryConfig
from postroom.services.system_config import SystemConfigService
from postroom.services.users import Session

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

RETRY_KEYS = tuple(RetryConfig.KEYS)
GUARD_KEYS = tuple(guardrails.BOUNDS)
#: the numbered inputs of one queue: (form suffix, path under the queue in PUT /config)
QUEUE_INPUTS = (
    ("concurrency", "concurrency"),
    ("batchSize", "batchSize"),
    *((f"retry.{k}", f"retry.{k}") for k in RETRY_KEYS),
    *((f"guardrail.{k}", f"guardrail.{k}") for k in GUARD_KEYS),
)


def _typed(raw: str) -> Any:
    """A number where the text is one; otherwise the text, for the service to refuse."""
    text = raw.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def _provider_changes(form: dict[str, str], current: dict[str, Any]) -> dict[str, Any]:
    default = form.get("defaultProvider", "")
    fallback = [n.strip() for n in form.get("fallbackProviders", "").split(",") if n.strip()]
    if default == (current["defaultProvider"] or "") and fallback == current["fallbackProviders"]:
        return {}
    return {"defaultProvider": default or None, "fallbackProviders": fallback}


def _queue_changes(form: dict[str, str], queues: dict[str, Any]) -> dict[str, Any]:
    """``{name: {key: value}}`` for each queue, with only what differs from now."""
    out: dict[str, Any] = {}
    for name, now in queues.items():
        change: dict[str, Any] = {}
        enabled = form.get(f"q.{name}.enabled") == "on"
        if enabled != now["enabled"]:
            change["enabled"] = enabled
        for key in ("concurrency", "batchSize"):
            raw = form.get(f"q.{name}.{key}", _shown(now[key]))
            if raw.strip() != _shown(now[key]):
                change[key] = _typed(raw) if raw.strip() else None
        for section, keys in (("retry", RETRY_KEYS), ("guardrail", GUARD_KEYS)):
            typed = {k: form.get(f"q.{name}.{section}.{k}", _shown(now[section][k])) for k in keys}
            values: dict[str, Any] = {k: _typed(v) for k, v in typed.items() if v.strip()}
            if section == "guardrail":
                values["enabled"] = form.get(f"q.{name}.guardrail.enabled") == "on"
            # the section is stored whole: send all of it when any part changed
            if any(_shown(now[section].get(k)) != v.strip() for k, v in typed.items()) or (
                section == "guardrail" and values["enabled"] != now[section]["enabled"]
            ):
                change[section] = values
        if change:
            out[name] = change
    return out


def body_of(form: dict[str, str], current: dict[str, Any]) -> dict[str, Any]:
    """The ``PUT /config`` body for what the form changed."""
    body = _provider_changes(form, current)
    queues = _queue_changes(form, current["queueConfig"]["queues"])
    if queues:
        body["queueConfig"] = {"queues": queues}
    return body


def _form_of(current: dict[str, Any]) -> dict[str, str]:
    form = {
        "defaultProvider": current["defaultProvider"] or "",
        "fallbackProviders": ", ".join(current["fallbackProviders"]),
    }
    for name, q in current["queueConfig"]["queues"].items():
        form[f"q.{name}.enabled"] = "on" if q["enabled"] else ""
        form[f"q.{name}.guardrail.enabled"] = "on" if q["guardrail"]["enabled"] else ""
        for suffix, _ in QUEUE_INPUTS:
            section, _, key = suffix.rpartition(".")
            value = q[section][key] if section else q[key]
            form[f"q.{name}.{suffix}"] = _shown(value)
    return form


def _field_of(api_field: str) -> str:
    """The form input a ``PUT /config`` problem is about."""
    if api_field.startswith("queueConfig.queues."):
        return "q." + api_field.removeprefix("queueConfig.queues.")
    return api_field.split(".")[0]


async def _render(
    request: Request,
    session: Session,
    current: dict[str, Any],
    *,
    form: dict[str, str] | None = None,
    problems: list[dict[str, str]] | None = None,
    status: int = 200,
    notice: str = "",
) -> Response:
    problems = problems or []
    return page(
        request,
        "settings.html",
        session,
        status_code=status,
        c=current,
        form=form or _form_of(current),
        problems=problems,
        errors={_field_of(p["field"]): p["message"] for p in problems},
        queue_inputs=QUEUE_INPUTS,
        notice=notice,
    )


@router.get("/settings")
async def settings(request: Request, session: CurrentSession, done: str = "") -> Response:
    current = await SystemConfigService(postroom_of(request)).read()
    notice = "Settings saved; running workers pick them up within seconds." if done else ""
    return await _render(request, session, current, notice=notice)


@router.post("/settings")
async def save(request: Request, posted: AdminAction) -> Response:
    service = SystemConfigService(postroom_of(request))
    current = await service.read()
    body = body_of(posted.form, current)
    if not body:
        return await _render(request, posted.session, current, notice="Nothing was changed.")
    try:
        await service.update(body)
    except RequestInvalid as exc:
        return await _render(
            request, posted.session, current, form=posted.form, problems=exc.errors, status=422
        )
    return RedirectResponse("/settings?done=saved", 303)
