"""``create_app``: the FastAPI application, with workers in the same process by default."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from postroom import __version__, dashboard
from postroom.api import docs, openapi, problems
from postroom.api.access import AccessLog
from postroom.api.deps import current_key
from postroom.api.routes import (
    analytics,
    bulk,
    config,
    domains,
    email,
    health,
    links,
    providers,
    queues,
    raw,
    templates,
    tracking,
    webhook_endpoints,
    webhooks,
)
from postroom.app import Postroom

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
    app.add_middleware(links.FastLinks)  # the pixel and click, ahead of the router
    app.add_middleware(email.FastSend, path=f"{API_PREFIX}/send")  # POST /send, likewise
    app.add_middleware(AccessLog)  # added last: outermost, so it sees those too

    # first: the public pixel and click routes are the busiest, and routes are tried in order
    app.include_router(links.router)  # open pixel, click redirect, unsubscribe
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(current_key)])
    api.include_router(email.router)
    api.include_router(raw.router)
    api.include_router(bulk.router)
    api.include_router(queues.router)
    api.include_router(providers.router)
    api.include_router(tracking.router)
    api.include_router(templates.router)
    api.include_router(domains.router)
    api.include_router(analytics.router)
    api.include_router(config.router)
    api.include_router(webhook_endpoints.router)
    app.include_router(api)
    # ESP webhooks authenticate by their own signatures, not by API key
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(analytics.metrics_router)
    dashboard.install(app)  # the web dashboard at /, beside the API

    openapi.install(app, pr.settings)
    return app
