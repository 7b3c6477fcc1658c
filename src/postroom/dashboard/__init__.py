"""The web dashboard: server-rendered pages at ``/`` beside the API at ``/api``.

``install(app)`` mounts it on the FastAPI app. Pages are Jinja2 templates with
autoescaping; the scripts are the vendored htmx, which refreshes live figures and
submits some forms in place, the vendored uPlot, which draws the analytics charts,
and ``dashboard.js``, which starts the charts and the template preview (all in
``static/``). Sign-in, CSRF and the security headers live in ``security``; the
pages in the other modules, one per page or group of pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from postroom.dashboard import (
    analytics_page,
    keys,
    messages,
    pages,
    provider_forms,
    providers,
    settings,
    suppressions,
    template_pages,
    webhooks,
)

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages at ``/``, assets at ``/static``."""
    app.include_router(pages.router)
    # the forms first: POST /providers/{id}/edit is not one of the provider actions
    app.include_router(provider_forms.router)
    app.include_router(providers.router)
    app.include_router(messages.router)
    app.include_router(keys.router)
    app.include_router(analytics_page.router)
    app.include_router(template_pages.router)
    app.include_router(suppressions.router)
    app.include_router(settings.router)
    app.include_router(webhooks.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
