"""The analytics page: the spec's figures over 24 hours, 7 or 30 days, with charts.

The figures are ``AnalyticsService.analytics``, the same as ``GET /analytics``
returns for that window. The trend chart is drawn by the vendored uPlot from the
series the page carries in a data attribute (``dashboard.js``); a table holds the
same figures for readers without the chart.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from postroom.analytics.figures import Filters
from postroom.analytics.queries import Granularity
from postroom.analytics.service import AnalyticsService
from postroom.dashboard.render import DashboardRoute, page
from postroom.dashboard.security import CurrentSession, postroom_of
from postroom.schemas.analytics import EmailAnalytics

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

#: period -> (length, granularity, label)
PERIODS: dict[str, tuple[timedelta, Granularity, str]] = {
    "24h": (timedelta(hours=24), "hour", "24 hours"),
    "7d": (timedelta(days=7), "day", "7 days"),
    "30d": (timedelta(days=30), "day", "30 days"),
}
#: the figures the chart and the tables show, in order
CHARTED = ("sent", "delivered", "bounced", "opened", "clicked")


def chart_of(figures: EmailAnalytics) -> dict[str, Any]:
    """The trend series as uPlot takes them: x in Unix seconds, one list per figure."""
    return {
        "x": [int(p.timestamp.timestamp()) for p in figures.trends],
        "series": [
            {"label": name, "values": [getattr(p, name) for p in figures.trends]}
            for name in CHARTED
        ],
    }


@router.get("/analytics")
async def analytics(request: Request, session: CurrentSession, period: str = "30d") -> Response:
    if period not in PERIODS:
        period = "30d"
    length, granularity, label = PERIODS[period]
    pr = postroom_of(request)
    service = AnalyticsService(pr.engine, pr.clock)
    end = pr.clock.now()
    figures = await service.analytics(end - length, end, granularity, Filters())
    s = figures.summary
    empty = not any(
        (s.total_sent, s.total_delivered, s.total_bounced, s.total_failed, s.total_opened)
    )
    most = max((p.sent for p in figures.providers), default=0)
    return page(
        request,
        "analytics.html",
        session,
        a=figures,
        period=period,
        periods={k: v[2] for k, v in PERIODS.items()},
        label=label,
        empty=empty,
        chart=chart_of(figures),
        charted=CHARTED,
        most_sent=most,
    )
