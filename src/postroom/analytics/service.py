"""``AnalyticsService``: figures for a window from rollups (closed days) and the
live tables (the rest), assembled as the API's ``EmailAnalytics``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.analytics.figures import DIMS, Counts, Filters, Key
from postroom.analytics.figures import Table as Groups
from postroom.analytics.queries import Granularity, count_live, hourly, read_rollup_sets
from postroom.analytics.rollups import (
    closed_hours_until,
    closed_until,
    ensure_hours_rolled,
    ensure_rolled,
    floor_hour,
    midnight,
)
from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider, EmailQueue, EmailTemplate
from postroom.errors import NotFound, RequestInvalid
from postroom.schemas.analytics import (
    AnalyticsSummary,
    AnalyticsWindow,
    EmailAnalytics,
    Performer,
    ProviderFigures,
    QueueFigures,
    TopPerformers,
    TrendPoint,
)

providers_t = cast(Table, EmailProvider.__table__)
queues_t = cast(Table, EmailQueue.__table__)
templates_t = cast(Table, EmailTemplate.__table__)

#: longest windows: hourly trends are counted from the live tables
MAX_HOURLY = timedelta(days=31)
MAX_WINDOW = timedelta(days=3660)
TOP = 10
T = TypeVar("T")


def parse_instant(value: str, field: str, *, end: bool = False) -> datetime:
    """An ISO date (its midnight UTC; for ``end``, the next midnight: the day is
    included) or an ISO date-time (UTC when it names no zone)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return midnight(day + timedelta(days=1) if end else day)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RequestInvalid(
            [{"field": field, "message": f"not an ISO date or date-time: {value!r}"}]
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(
    start: str | None, end: str | None, now: datetime, granularity: str = "day"
) -> tuple[datetime, datetime]:
    """The window ``[from, to)``; by default the 30 days up to now."""
    problems = []
    if granularity not in ("hour", "day"):
        problems.append({"field": "granularity", "message": "must be 'hour' or 'day'"})
    to = parse_instant(end, "to", end=True) if end else now
    frm = parse_instant(start, "from") if start else to - timedelta(days=30)
    if frm >= to:
        problems.append({"field": "from", "message": "must be before 'to'"})
    elif to - frm > (MAX_HOURLY if granularity == "hour" else MAX_WINDOW):
        limit = "31 days for hourly figures" if granularity == "hour" else "10 years"
        problems.append({"field": "from", "message": f"the window may span at most {limit}"})
    if problems:
        raise RequestInvalid(problems)
    return frm, to


def _ceil_day(at: datetime) -> date:
    return (at + timedelta(days=1) - timedelta(microseconds=1)).astimezone(UTC).date()


def _figures(cls: Callable[..., T], counts: Counts, **extra: Any) -> T:
    return cls(**counts.as_dict(), **_snake(counts.rates()), **extra)


def _snake(rates: dict[str, float]) -> dict[str, float]:
    return {"".join("_" + c.lower() if c.isupper() else c for c in k): v for k, v in rates.items()}


def _by(groups: Groups, dim: Callable[[Key], Any]) -> dict[Any, Counts]:
    out: dict[Any, Counts] = {}
    for key, counts in groups.groups.items():
        out.setdefault(dim(key), Counts()).add(counts)
    return out


class AnalyticsService:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    async def filters(
        self,
        *,
        provider: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        tag: str | None = None,
        template: str | None = None,
    ) -> Filters:
        """Filters from names or ids; an unknown provider, queue or template is a 404."""
        ids: dict[str, uuid.UUID | None] = {"provider": None, "queue": None, "template": None}
        async with reader(self.engine).connect() as conn:
            for name, table, ident in (
                ("provider", providers_t, provider),
                ("queue", queues_t, queue),
                ("template", templates_t, template),
            ):
                if ident is None:
                    continue
                found = (
                    await conn.execute(
                        select(table.c.id).where(by_name_or_id(table, "name", ident))
                    )
                ).first()
                if found is None:
                    raise NotFound(f"there is no {name} {ident!r}")
                ids[name] = found.id
        return Filters(
            provider_id=ids["provider"],
            queue_id=ids["queue"],
            type=type,
            tag=tag,
            template_id=ids["template"],
        )

    async def groups(
        self,
        start: datetime,
        end: datetime,
        granularity: Granularity | None,
        filters: Filters,
        dimsets: Sequence[frozenset[str]] = (frozenset(DIMS),),
    ) -> list[Groups]:
        """Figures in ``[start, end)``, once per set of dimensions (``DIMS``; "bucket"
        only counts with a granularity). Whole closed days come from the daily
        rollups (not for hourly figures), the whole closed hours of the rest from the
        hourly rollups (both rolled ahead by the worker, or here on first use, and
        summed in SQL per set), and what is left (the hours within ``GRACE``, partial
        hours) from the live tables, counted once and projected per set: every
        figure is as written, none lags a roll."""
        now = self.clock.now()
        if granularity is None:
            dimsets = [d - {"bucket"} for d in dimsets]
        by_day = granularity != "hour"
        rest = [(start, end)]
        day_span: tuple[date, date] | None = None
        if by_day:
            first = _ceil_day(start)
            last = min(end.astimezone(UTC).date(), closed_until(now))
            if first < last:
                day_span = (first, last)
                rest = [(start, midnight(first)), (midnight(last), end)]
        hour_spans: list[tuple[datetime, datetime]] = []
        live_spans: list[tuple[datetime, datetime]] = []
        for a, b in rest:
            if a >= b:
                continue
            first_h = floor_hour(a + timedelta(hours=1) - timedelta(microseconds=1))
            # whole closed hours from the rollups, the open ones live
            last_h = min(floor_hour(b), closed_hours_until(now))
            if first_h < last_h:
                hour_spans.append((first_h, last_h))
                live_spans += [(a, first_h), (last_h, b)]
            else:
                live_spans.append((a, b))
        if day_span:
            await ensure_rolled(self.engine, *day_span, now)
        for span in hour_spans:
            await ensure_hours_rolled(self.engine, *span, now)
        async with reader(self.engine).connect() as conn:
            live = Groups()
            for a, b in live_spans:
                if a < b:
                    live.merge(await count_live(conn, a, b, granularity, filters))
            out = [live.project(dims) for dims in dimsets]
            parts = []
            if day_span:
                parts.append(await read_rollup_sets(conn, *day_span, dimsets, filters))
            for span in hour_spans:
                parts.append(
                    await read_rollup_sets(
                        conn, *span, dimsets, filters, table=hourly, by_day=by_day
                    )
                )
            for part in parts:
                for groups, more in zip(out, part, strict=True):
                    groups.merge(more)
        return out

    async def template_names(self) -> dict[uuid.UUID, str]:
        async with reader(self.engine).connect() as conn:
            rows = await conn.execute(select(templates_t.c.id, templates_t.c.name))
            return {r.id: r.name for r in rows}

    async def names(self) -> tuple[dict[uuid.UUID, Any], dict[uuid.UUID, str]]:
        async with reader(self.engine).connect() as conn:
            providers = {
                r.id: r
                for r in await conn.execute(
                    select(providers_t.c.id, providers_t.c.name, providers_t.c.type)
                )
            }
            queues = {
                r.id: r.name for r in await conn.execute(select(queues_t.c.id, queues_t.c.name))
            }
        return providers, queues

    async def analytics(
        self, start: datetime, end: datetime, granularity: Granularity, filters: Filters
    ) -> EmailAnalytics:
        per_bucket, per_provider, per_queue, per_type, per_tag, per_template = await self.groups(
            start, end, granularity, filters, [frozenset({d}) for d in DIMS]
        )
        providers, queues = await self.names()
        templates = await self.template_names()
        total = per_bucket.total()
        rates = _snake(total.rates())
        summary = AnalyticsSummary(**{f"total_{k}": v for k, v in total.as_dict().items()}, **rates)
        by_provider = [
            _figures(
                ProviderFigures,
                c,
                provider_id=str(pid) if pid else None,
                name=providers[pid].name if pid in providers else None,
                type=providers[pid].type if pid in providers else None,
            )
            for pid, c in sorted(
                _by(per_provider, lambda k: k.provider_id).items(), key=lambda i: -i[1].sent
            )
        ]
        by_queue = [
            _figures(
                QueueFigures,
                c,
                queue_id=str(qid) if qid else None,
                name=queues.get(qid) if qid else None,
            )
            for qid, c in sorted(
                _by(per_queue, lambda k: k.queue_id).items(), key=lambda i: -i[1].sent
            )
        ]
        return EmailAnalytics(
            window=AnalyticsWindow(start=start, end=end, granularity=granularity),
            summary=summary,
            providers=by_provider,
            queues=by_queue,
            trends=self._trends(per_bucket, start, end, granularity),
            top_performers=TopPerformers(
                tags=_top(_by(per_tag, lambda k: k.tag)),
                types=_top(_by(per_type, lambda k: k.type)),
                templates=_top(_by(per_template, lambda k: k.template_id), templates),
            ),
        )

    @staticmethod
    def _trends(
        groups: Groups, start: datetime, end: datetime, granularity: Granularity
    ) -> list[TrendPoint]:
        """One point per hour or day of the window, zeros included."""
        per = _by(groups, lambda k: k.bucket)
        step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
        at = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if granularity == "day":
            at = at.replace(hour=0)
        points = []
        while at < end:
            points.append(_figures(TrendPoint, per.get(at, Counts()), timestamp=at))
            at += step
        return points


def _top(per: dict[Any, Counts], names: dict[Any, str] | None = None) -> list[Performer]:
    """Best open rate first, then delivery rate, then volume; only keys with sends."""
    ranked = sorted(
        ((k, c) for k, c in per.items() if k is not None and c.sent),
        key=lambda i: (
            -i[1].rates()["openRate"],
            -i[1].rates()["deliveryRate"],
            -i[1].sent,
            str(i[0]),
        ),
    )
    return [
        _figures(Performer, c, key=str(k), name=names.get(k) if names is not None else None)
        for k, c in ranked[:TOP]
    ]
