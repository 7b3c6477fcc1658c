"""Reports: the analytics figures as rows grouped by period and dimensions, streamed
as CSV (a header row, one column per figure and rate) or JSON.

A report with a time dimension is produced a week at a time, so memory holds one
week's groups however long the window is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from postroom.analytics.figures import FIGURE_NAMES, FIGURES, RATES, Counts, Filters
from postroom.analytics.queries import Granularity, as_bucket, daily, filtered, hourly
from postroom.analytics.rollups import (
    closed_hours_until,
    closed_until,
    ensure_hours_rolled,
    ensure_rolled,
    floor_hour,
    midnight,
)
from postroom.analytics.service import AnalyticsService, providers_t, queues_t, templates_t
from postroom.db.engine import reader
from postroom.errors import RequestInvalid

#: days summed per step of a report split by time: memory holds one step's groups
CHUNK_DAYS = 7
DIMENSIONS = ("day", "hour", "provider", "queue", "type", "tag", "template")
_DIM_OF = {
    "day": "bucket",
    "hour": "bucket",
    "provider": "provider_id",
    "queue": "queue_id",
    "type": "type",
    "tag": "tag",
    "template": "template_id",
}


#: rows read per round trip from a server-side cursor
STREAM_BATCH = 10_000
#: dimensions shown by the name of the row they point to
_NAMED = {"provider": providers_t, "queue": queues_t, "template": templates_t}
#: (numerator, denominator) positions in ``FIGURES`` per rate, in ``RATES`` order
_RATE_AT = [(FIGURES.index(n), FIGURES.index(d)) for n, d in RATES.values()]


def _ceil_day(at: datetime) -> date:
    return (at + timedelta(days=1) - timedelta(microseconds=1)).astimezone(UTC).date()


def _index(group_by: Sequence[str], dims: tuple[str, ...]) -> int | None:
    return next((i for i, d in enumerate(group_by) if d in dims), None)


def _sortable(col: Any, dialect: str) -> Any:
    """``col`` sorted as Python sorts the labels: None first (as ""), by code point."""
    value = func.coalesce(col, "")
    return value.collate("C") if dialect == "postgresql" else value


def _period_label(value: Any, day: bool) -> str | None:
    if value is None:
        return None
    if day:
        return value.isoformat() if isinstance(value, date) else str(value)[:10]
    bucket = as_bucket(value)
    return bucket.isoformat() if bucket else None


def parse_group_by(value: str | None) -> list[str]:
    """``day`` by default; a comma-separated list of ``DIMENSIONS``, at most one period."""
    dims = [d.strip() for d in (value or "day").split(",") if d.strip()]
    bad = [d for d in dims if d not in DIMENSIONS]
    problems = []
    if bad:
        problems.append(
            {"field": "groupBy", "message": f"unknown {bad}; choose from {', '.join(DIMENSIONS)}"}
        )
    if "day" in dims and "hour" in dims:
        problems.append({"field": "groupBy", "message": "group by 'day' or 'hour', not both"})
    if len(set(dims)) != len(dims):
        problems.append({"field": "groupBy", "message": "a dimension is named twice"})
    if problems:
        raise RequestInvalid(problems)
    return dims


def columns(group_by: Sequence[str]) -> list[str]:
    return [*group_by, *FIGURE_NAMES, *RATES]


class Report:
    """One report's rows, produced lazily."""

    def __init__(
        self,
        service: AnalyticsService,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        filters: Filters,
    ) -> None:
        self.service = service
        self.start, self.end = start, end
        self.group_by = list(group_by)
        self.filters = filters
        #: called after each chunk of the window is written (a progress bar's step)
        self.on_chunk: Callable[[], None] | None = None
        self.dims = frozenset(_DIM_OF[d] for d in group_by)
        self.granularity: Granularity | None = next(
            (d for d in group_by if d in ("day", "hour")),  # type: ignore[misc]
            None,
        )

    def chunks(self) -> list[tuple[datetime, datetime, bool]]:
        """The pieces the window is produced in, ``(start, end, rolled)``: the whole
        closed periods in one piece, read from the rollups in SQL and streamed
        (``rolled``); the rest (the last hours, a partial first or last day) counted up
        to ``CHUNK_DAYS`` days at a time (one piece when not split by time)."""
        if self.granularity is None:
            return [(self.start, self.end, False)]
        now = self.service.clock.now()
        if self.granularity == "day":
            first = midnight(_ceil_day(self.start))
            last = midnight(min(self.end.astimezone(UTC).date(), closed_until(now)))
        else:
            first = floor_hour(self.start + timedelta(hours=1) - timedelta(microseconds=1))
            last = min(floor_hour(self.end), closed_hours_until(now))
        if first >= last:
            return self._counted_pieces(self.start, self.end)
        return [
            *self._counted_pieces(self.start, first),
            (first, last, True),
            *self._counted_pieces(last, self.end),
        ]

    def _counted_pieces(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime, bool]]:
        out = []
        at = start
        while at < end:
            nxt = min(midnight(at.astimezone(UTC).date() + timedelta(days=CHUNK_DAYS)), end)
            out.append((at, nxt, False))
            at = nxt
        return out

    async def rows(self) -> AsyncIterator[list[Any]]:
        """Rows as lists in ``columns`` order, in period then label order."""
        async for batch in self.batches():
            for row in batch:
                yield row

    async def batches(self) -> AsyncIterator[list[list[Any]]]:
        """``rows`` a batch at a time (the streamed part: a cursor fetch each)."""
        providers, queues = await self.service.names()
        templates = await self.service.template_names()
        names = {
            "provider": lambda k: (
                providers[k.provider_id].name if k.provider_id in providers else None
            ),
            "queue": lambda k: queues.get(k.queue_id) if k.queue_id else None,
            "type": lambda k: k.type,
            "tag": lambda k: k.tag,
            "template": lambda k: (
                templates.get(k.template_id, str(k.template_id)) if k.template_id else None
            ),
            "day": lambda k: k.bucket.date().isoformat() if k.bucket else None,
            "hour": lambda k: k.bucket.isoformat() if k.bucket else None,
        }
        for start, end, rolled in self.chunks():
            if rolled:
                async for batch in self._rolled(start, end, templates):
                    yield batch
            else:
                yield await self._counted(start, end, names)
            if self.on_chunk is not None:
                self.on_chunk()

    async def _counted(
        self, start: datetime, end: datetime, names: dict[str, Any]
    ) -> list[list[Any]]:
        (groups,) = await self.service.groups(
            start, end, self.granularity, self.filters, [self.dims]
        )
        merged: dict[tuple[Any, ...], Counts] = {}
        for key, counts in groups.groups.items():
            merged.setdefault(tuple(names[d](key) for d in self.group_by), Counts()).add(counts)
        return [
            [*label, *merged[label].as_dict().values(), *merged[label].rates().values()]
            for label in sorted(merged, key=lambda t: tuple("" if v is None else str(v) for v in t))
        ]

    async def _rolled(
        self, start: datetime, end: datetime, templates: dict[Any, str]
    ) -> AsyncIterator[list[list[Any]]]:
        """Closed periods straight from a rollup table: summed, named and sorted in SQL,
        read through a server-side cursor, each row only given its rates."""
        engine, now = self.service.engine, self.service.clock.now()
        day = self.granularity == "day"
        if day:
            await ensure_rolled(engine, start.date(), end.date(), now)
        else:
            await ensure_hours_rolled(engine, start, end, now)
        table = daily if day else hourly
        period = table.c.date if day else table.c.hour
        joined: Any = table
        labels: list[Any] = []
        order: list[Any] = []
        for d in self.group_by:
            if d in ("day", "hour"):
                labels.append(period)
                order.append(period)
                continue
            col = table.c[_DIM_OF[d]]
            if d in _NAMED:
                named = _NAMED[d].alias(f"{d}_named")
                joined = joined.outerjoin(named, named.c.id == col)
                col = named.c.name
            labels.append(col)
            order.append(_sortable(col, engine.dialect.name))
        # a template no longer stored is shown by its id
        extra = [table.c.template_id] if "template" in self.group_by else []
        sums = [func.coalesce(func.sum(table.c[f"total_{f}"]), 0) for f in FIGURES]
        stmt = (
            select(*labels, *sums, *extra)
            .select_from(joined)
            .where(
                period >= (start.date() if day else start), period < (end.date() if day else end)
            )
            .group_by(*labels, *extra)
            .order_by(*order)
        )
        stmt = filtered(stmt, self.filters, table)
        n_labels, n_figures = len(labels), len(FIGURES)
        at_period = _index(self.group_by, ("day", "hour"))
        at_template = _index(self.group_by, ("template",))
        async with reader(engine).connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=STREAM_BATCH))
            async for part in result.partitions(STREAM_BATCH):
                batch = []
                for row in part:
                    out = list(row[:n_labels])
                    vals = row[n_labels : n_labels + n_figures]
                    if at_period is not None:
                        out[at_period] = _period_label(out[at_period], day)
                    if at_template is not None and out[at_template] is None and row[-1]:
                        out[at_template] = templates.get(row[-1], str(row[-1]))
                    out += vals
                    out += [round(vals[n] / vals[d], 6) if vals[d] else 0.0 for n, d in _RATE_AT]
                    batch.append(out)
                yield batch

    async def csv(self) -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns(self.group_by))
        async for batch in self.batches():
            writer.writerows(batch)
            if buf.tell() > 64_000:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    async def json(self) -> AsyncIterator[str]:
        head = {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "groupBy": self.group_by,
            "columns": columns(self.group_by),
        }
        yield json.dumps(head)[:-1] + ', "rows": ['
        names = columns(self.group_by)
        sep = ""
        batch: list[str] = []
        async for row in self.rows():
            batch.append(sep + json.dumps(dict(zip(names, row, strict=True))))
            sep = ","
            if len(batch) >= 500:
                yield "".join(batch)
                batch.clear()
        yield "".join(batch) + "]}"
