"""``create_app``: the FastAPI application, with workers in the same process by default."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from postroom import __version__, dashboard
from postroom.api import docs, problems
from postroom.api.access import AccessLog
from postroom.api.deps import current_key
from postroom.api.routes import email, health, providers, queues, raw
from postroom.app import Postroom
from postroom.schemas.email import EmailRequest

log = logging.getLogger(__name__)
API_PREFIX = "/api/system/email"

#: FastAPI's built-in OpenTelemetry hooks look up the global providers on every request
#: (about a tenth of a ``POST /send``); Postroom configures none, so they are off
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(postroom: Postroom | None = None, *, workers: int = 1) -> FastAPI:
    """The ASGI app. ``workers`` in-process workers run while it is up (0: none)."""
    pr = postroom or Postroom()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not pr.started:
            await pr.start()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(pr.worker().run(stop)) for _ in range(workers)]
        app.state.worker_tasks = tasks
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pr.aclose()

    app = FastAPI(
        title="Postroom",
        version=__version__,
        description="Self-hosted email delivery: one API over SMTP relays and ESPs.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        **_NO_TELEMETRY,
    )
    app.state.postroom = pr
    problems.install(app)
    docs.install(app)
    app.add_middleware(AccessLog)

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(current_key)])
    api.include_router(email.router)
    api.include_router(raw.router)
    api.include_router(queues.router)
    api.include_router(providers.router)
    app.include_router(api)
    app.include_router(health.router)
    dashboard.install(app)  # the web dashboard at /, beside the API

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = EmailRequest.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components.update(request_schema.pop("$defs", {}))
            components["EmailRequest"] = request_schema
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
