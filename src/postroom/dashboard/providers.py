"""The providers page: health, latency and limits; enable, disable, priority, tests.

Everything goes through ``ProviderService`` and ``ProviderTester``, the same
services as the API, so the dashboard cannot do what the API would refuse. The
page shows the service's public view, in which every secret is already masked.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import AdminAction, CurrentSession, postroom_of
from postroom.errors import MessageError, NotFound, PostroomError
from postroom.schemas.providers import ProviderUpdate, TestEmailRequest
from postroom.services.provider_tests import ProviderTester
from postroom.services.providers import ProviderService

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

ProviderKey = Annotated[str, Path(max_length=255)]
NOTICES = {
    "enabled": "Provider {} enabled.",
    "disabled": "Provider {} disabled.",
    "priority": "Priority of {} changed.",
    "saved": "Provider {} saved.",
}


def service_of(request: Request) -> ProviderService:
    return ProviderService.of(postroom_of(request))


async def _render(request: Request, session: Any, *, status: int = 200, **extra: Any) -> Response:
    providers = await service_of(request).list_all()
    fragment = request.headers.get("hx-request") == "true" and "result" in extra
    name = "provider_result.html" if fragment else "providers.html"
    return page(request, name, session, status_code=status, providers=providers, **extra)


@router.get("/providers")
async def providers(
    request: Request, session: CurrentSession, done: str = "", provider: str = ""
) -> Response:
    notice = NOTICES[done].format(provider) if done in NOTICES and provider else ""
    return await _render(request, session, notice=notice)


@router.post("/providers/{provider}/test")
async def test_connection(request: Request, provider: ProviderKey, posted: AdminAction) -> Response:
    """Connect and authenticate (no mail); the result is shown beside the provider."""
    pr = postroom_of(request)
    row = await service_of(request).row(provider)
    try:
        result = await ProviderTester(service_of(request), pr.settings).check(str(row.id))
    except PostroomError as exc:  # e.g. settings the adapter cannot be built from
        outcome: dict[str, Any] = {"ok": False, "title": "Cannot test", "detail": exc.message}
    else:
        outcome = {
            "ok": result.ok,
            "title": "Connection works" if result.ok else "Connection failed",
            "detail": result.detail,
            "latency_ms": result.latency_ms,
        }
    outcome.setdefault("latency_ms", None)
    return await _render(request, posted.session, result={"provider_id": str(row.id), **outcome})


@router.post("/providers/{provider}/send-test")
async def send_test(request: Request, provider: ProviderKey, posted: AdminAction) -> Response:
    """Send one test message through this provider at once and show its answer.

    A refusal before sending (a bad address, no sender, a full limit) is shown in
    the same place as the provider's own answer.
    """
    pr = postroom_of(request)
    row = await service_of(request).row(provider)
    to = posted.form.get("to", "").strip()
    fields: dict[str, Any] = {"to": [{"email": to}], "providerId": str(row.id)}
    if posted.form.get("from", "").strip():
        fields["from"] = {"email": posted.form["from"].strip()}
    outcome: dict[str, Any] = {"provider_id": str(row.id), "ok": False, "latency_ms": None}
    try:
        body = TestEmailRequest.model_validate(fields)
        sent = await ProviderTester(service_of(request), pr.settings).send(body)
    except ValidationError as exc:
        where = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors()}))
        outcome.update(title="Not sent", detail=f"give a valid address ({where})")
    except PostroomError as exc:
        outcome.update(title="Not sent", detail=exc.message)
    else:
        outcome.update(
            ok=sent.ok,
            title=f"Test message sent to {to}" if sent.ok else "Sending failed",
            detail=(sent.response or "") if sent.ok else (sent.error.message if sent.error else ""),
            latency_ms=sent.latency_ms,
        )
    return await _render(request, posted.session, result=outcome)


@router.post("/providers/{provider}/{action}")
async def change(
    request: Request, provider: ProviderKey, action: str, posted: AdminAction
) -> Response:
    service = service_of(request)
    if action in ("enable", "disable"):
        public = await service.set_enabled(provider, action == "enable")
        done = f"{action}d"
    elif action == "priority":
        raw = posted.form.get("priority", "").strip()
        if not raw.isdigit():
            raise MessageError("the priority is a whole number (higher is tried first)")
        try:
            update = ProviderUpdate(priority=int(raw))
        except ValidationError:
            raise MessageError("the priority must be between 0 and 1000000") from None
        public = await service.update(provider, update)
        done = "priority"
    else:
        raise NotFound(f"no provider action {action!r}")
    query = urlencode({"done": done, "provider": public.name})
    return RedirectResponse(f"/providers?{query}", 303)
