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
from datetime import datetime, timedelta
from typing import Any

from postroom.analytics.figures import FIGURE_NAMES, RATES, Counts, Filters, Key
from postroom.analytics.queries import Granularity
from postroom.analytics.rollups import midnight
from postroom.analytics.service import AnalyticsService
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

    def chunks(self) -> list[tuple[datetime, datetime]]:
        """Pieces of the window of up to ``CHUNK_DAYS`` days, cut at midnight (one
        piece when not split by time)."""
        if self.granularity is None:
            return [(self.start, self.end)]
        out = []
        at = self.start
        while at < self.end:
            nxt = min(midnight(at.date() + timedelta(days=CHUNK_DAYS)), self.end)
            out.append((at, nxt))
            at = nxt
        return out

    async def rows(self) -> AsyncIterator[list[Any]]:
        """Rows as lists in ``columns`` order, in period then label order."""
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
        for start, end in self.chunks():
            (groups,) = await self.service.groups(
                start, end, self.granularity, self.filters, [self.dims]
            )
            merged: dict[tuple[Any, ...], Counts] = {}
            for key, counts in groups.groups.items():
                merged.setdefault(self._label(key, names), Counts()).add(counts)
            for label in sorted(
                merged, key=lambda t: tuple("" if v is None else str(v) for v in t)
            ):
                counts = merged[label]
                yield [*label, *counts.as_dict().values(), *counts.rates().values()]

    def _label(self, key: Key, names: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(names[d](key) for d in self.group_by)

    async def csv(self) -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns(self.group_by))
        async for row in self.rows():
            writer.writerow(row)
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
