"""The web dashboard: server-rendered pages at ``/`` beside the API at ``/api``.

``install(app)`` mounts it on the FastAPI app. Pages are Jinja2 templates with
autoescaping; the only script is the vendored htmx (``static/``), which refreshes
live figures and submits some forms in place. Sign-in, CSRF and the security
headers live in ``security``; the pages in ``pages`` and ``messages``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from postroom.dashboard import keys, messages, pages, provider_forms, providers

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages at ``/``, assets at ``/static``."""
    app.include_router(pages.router)
    # the forms first: POST /providers/{id}/edit is not one of the provider actions
    app.include_router(provider_forms.router)
    app.include_router(providers.router)
    app.include_router(messages.router)
    app.include_router(keys.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
