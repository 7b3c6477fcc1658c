"""``GET /analytics`` (the spec's ``EmailAnalytics``), ``GET /reports`` (CSV or JSON,
streamed) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from postroom.analytics import metrics
from postroom.analytics.figures import Filters
from postroom.analytics.reports import Report, parse_group_by
from postroom.analytics.service import AnalyticsService, window
from postroom.api.deps import PostroomDep, current_key, require
from postroom.schemas.analytics import EmailAnalytics
from postroom.types import ApiScope

router = APIRouter(tags=["analytics"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _PROBLEM,
    403: _PROBLEM,
    404: _PROBLEM,
    422: _PROBLEM,
}

_FROM = Query(
    alias="from", description="ISO date (midnight UTC) or date-time; default: `to` - 30 days"
)
_TO = Query(alias="to", description="ISO date (that day included) or date-time; default: now")


def get_service(postroom: PostroomDep) -> AnalyticsService:
    return AnalyticsService(postroom.engine, postroom.clock)


Service = Annotated[AnalyticsService, Depends(get_service)]


async def _filters(
    service: Service,
    provider: Annotated[str | None, Query(description="Provider name or id")] = None,
    queue: Annotated[str | None, Query(description="Queue name or id")] = None,
    type: Annotated[str | None, Query(description="Message type, e.g. marketing")] = None,
    tag: Annotated[str | None, Query(description="Campaign tag (a message's first tag)")] = None,
    template: Annotated[
        str | None, Query(description="Template name or id (mail rendered from it)")
    ] = None,
) -> Filters:
    return await service.filters(
        provider=provider, queue=queue, type=type, tag=tag, template=template
    )


FiltersDep = Annotated[Filters, Depends(_filters)]


@router.get("/analytics", response_model=EmailAnalytics, dependencies=_READ, responses=_ERRORS)
async def analytics(
    service: Service,
    filters: FiltersDep,
    start: Annotated[str | None, _FROM] = None,
    end: Annotated[str | None, _TO] = None,
    granularity: Annotated[
        str, Query(description="'hour' or 'day'", json_schema_extra={"enum": ["hour", "day"]})
    ] = "day",
) -> EmailAnalytics:
    """Totals and rates (beside the totals, opens and clicks people made, without those
    of privacy proxies and link scanners), per provider and queue, a time series and
    the best campaign tags, types and templates for ``[from, to)``. Each figure counts
    on the UTC period its event happened in."""
    frm, to = window(start, end, service.clock.now(), granularity)
    return await service.analytics(frm, to, "hour" if granularity == "hour" else "day", filters)


@router.get(
    "/reports",
    dependencies=_READ,
    responses={**_ERRORS, 200: {"content": {"text/csv": {}, "application/json": {}}}},
)
async def report(
    service: Service,
    filters: FiltersDep,
    start: Annotated[str | None, _FROM] = None,
    end: Annotated[str | None, _TO] = None,
    group_by: Annotated[
        str | None,
        Query(
            alias="groupBy",
            description="Comma-separated: day|hour, provider, queue, type, tag, template",
        ),
    ] = None,
    format: Annotated[Literal["csv", "json"], Query(description="csv or json")] = "csv",
) -> StreamingResponse:
    """The figures grouped as asked, one row per group, streamed."""
    dims = parse_group_by(group_by)
    frm, to = window(start, end, service.clock.now(), "hour" if "hour" in dims else "day")
    rep = Report(service, frm, to, dims, filters)
    name = f"postroom-report-{frm.date().isoformat()}-{to.date().isoformat()}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "json":
        return StreamingResponse(rep.json(), media_type="application/json", headers=headers)
    return StreamingResponse(rep.csv(), media_type="text/csv; charset=utf-8", headers=headers)


#: at the root (``/metrics``, where Prometheus looks), not under the API prefix
metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get(
    "/metrics",
    dependencies=[Depends(current_key), *_READ],
    responses={**_ERRORS, 200: {"content": {metrics.CONTENT_TYPE: {}}}},
    response_class=Response,
)
async def prometheus_metrics(postroom: PostroomDep) -> Response:
    """Prometheus metrics (text format): queue depth, oldest pending age and in-flight
    jobs per queue, sends by provider and outcome, send latency, rate-limit deferrals,
    webhook events. Counted from the database, so right with any number of workers."""
    body = await metrics.render(postroom.engine, postroom.clock.now())
    return Response(body, media_type=metrics.CONTENT_TYPE)
