"""Reports: the analytics figures as rows grouped by period and dimensions, streamed
as CSV (a header row, one column per figure and rate) or JSON.

A report with a time dimension is produced a week at a time, so memory holds one
week's groups however long the window is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import DateTime, func, select, text, type_coerce

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
#: PostgreSQL's memory for grouping and sorting a report's rollup rows
SORT_MEMORY = "64MB"
#: for a report grouped by period first, on PostgreSQL: read the rollup in period order
#: through its index and group and sort one period at a time (incremental sorts), so
#: rows leave the server as they are made instead of after the whole window is hashed
#: and sorted (a month of hours by every dimension: the first row after 5-10 ms
#: instead of about 1 s); with ``_read_ahead`` the server makes the next batch while
#: this one is written (the hourly export of the benchmark: 12-15 % less time)
_STREAMING_PLAN = text(
    "SELECT set_config('enable_hashagg', 'off', true), set_config('enable_sort', 'off', true),"
    " set_config('enable_seqscan', 'off', true)"
)
#: dimensions shown by the name of the row they point to
_NAMED = {"provider": providers_t, "queue": queues_t, "template": templates_t}
#: (numerator, denominator) positions in ``FIGURES`` per rate, in ``RATES`` order
_RATE_AT = [(FIGURES.index(n), FIGURES.index(d)) for n, d in RATES.values()]
N_FIGURES = len(FIGURES)
#: CSV rows sent per piece of the response (about 64 kB at 5 labels)
CSV_PIECE_ROWS = 500
#: figures-and-rates texts kept while a CSV report is written (then started again)
TAIL_CACHE = 50_000
#: characters that make a CSV field quoted
_SPECIAL = re.compile(r'[,"\r\n]')
_QUOTED = re.compile(r'["\r\n]')


T = TypeVar("T")


async def _read_ahead(parts: AsyncIterator[T]) -> AsyncIterator[T]:
    """``parts``, with the next one already asked for while the caller handles this one
    (a cursor fetch is a round trip the server works on in the meantime)."""
    it = aiter(parts)
    ahead = asyncio.ensure_future(anext(it))
    try:
        while True:
            try:
                part = await ahead
            except StopAsyncIteration:
                return
            ahead = asyncio.ensure_future(anext(it))
            await asyncio.sleep(0)  # let the fetch go out before the caller's work
            yield part
    finally:
        if not ahead.done():
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead
        close = getattr(it, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def _csv_field(value: Any) -> str:
    """A CSV field as ``csv.writer`` (``QUOTE_MINIMAL``) writes it: None empty, a
    float by ``repr``, quoted when it holds a comma, a quote or a line break."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if _SPECIAL.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _figures_text(vals: Sequence[int]) -> str:
    """The figures and rates of a row as CSV, with its line end."""
    rates = [repr(round(vals[a] / vals[b], 6)) if vals[b] else "0.0" for a, b in _RATE_AT]
    return ",".join([*map(str, vals), *rates]) + "\n"


def _csv_line(values: Sequence[Any]) -> str:
    return ",".join(map(_csv_field, values)) + "\n"


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
        #: template names by id (loaded when the rows are)
        self._templates: dict[Any, str] = {}
        self._at_period = _index(self.group_by, ("day", "hour"))
        self._period_texts: dict[Any, str | None] = {}
        self._at_template = _index(self.group_by, ("template",))
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
        async for part, rolled in self._parts():
            yield [self._rolled_row(r) for r in part] if rolled else list(part)

    async def _parts(self) -> AsyncIterator[tuple[Sequence[Any], bool]]:
        """The report's pieces in order: ``(rows, False)`` for a counted piece (rows as
        lists in ``columns`` order), ``(database rows, True)`` for each cursor fetch
        of the rolled-up part (see ``_rolled``; ``_rolled_row`` makes them lists)."""
        providers, queues = await self.service.names()
        self._templates = templates = await self.service.template_names()
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
        chunks = self.chunks()
        ahead: asyncio.Task[list[list[Any]]] | None = None
        for i, (start, end, rolled) in enumerate(chunks):
            if rolled:
                nxt = chunks[i + 1] if i + 1 < len(chunks) else None
                if nxt is not None:
                    # the piece after the rolled-up part (today) is counted on another
                    # connection while the rolled-up part streams
                    ahead = asyncio.create_task(self._counted(nxt[0], nxt[1], names))
                try:
                    async for part in self._rolled(start, end):
                        yield part, True
                except BaseException:
                    if ahead is not None:
                        ahead.cancel()
                    raise
            elif ahead is not None:
                yield await ahead, False
                ahead = None
            else:
                yield await self._counted(start, end, names), False
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

    async def _rolled(self, start: datetime, end: datetime) -> AsyncIterator[Sequence[Any]]:
        """Closed periods straight from a rollup table: summed, named and sorted in SQL,
        read through a server-side cursor ``STREAM_BATCH`` rows at a time. A row is
        the labels (``group_by`` order), the figures (``FIGURES`` order), and the
        template id when grouped by template (a template no longer stored is shown by
        its id)."""
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
                # the driver's value as is: its label is made once per period
                labels.append(period if day else type_coerce(period, DateTime()))
                order.append(period)
                continue
            col = table.c[_DIM_OF[d]]
            if d in _NAMED:
                named = _NAMED[d].alias(f"{d}_named")
                joined = joined.outerjoin(named, named.c.id == col)
                col = named.c.name
            labels.append(col)
            order.append(_sortable(col, engine.dialect.name))
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
        async with reader(engine).connect() as conn:
            if conn.dialect.name == "postgresql":
                # a month of hours by every dimension is grouped and sorted in memory,
                # not in temporary files (the default 4 MB spills at ~20,000 groups)
                await conn.execute(text(f"SET LOCAL work_mem = '{SORT_MEMORY}'"))
                if self.group_by[0] in ("day", "hour"):
                    await conn.execute(_STREAMING_PLAN)
            result = await conn.stream(stmt.execution_options(yield_per=STREAM_BATCH))
            async for part in _read_ahead(result.partitions(STREAM_BATCH)):
                yield part

    def _labels(self, row: Sequence[Any]) -> list[Any]:
        """The labels of a rolled-up row: the period as text, a gone template by id."""
        out = list(row[: len(self.group_by)])
        at = self._at_period
        if at is not None:
            out[at] = _period_label(out[at], self.granularity == "day")
        at = self._at_template
        if at is not None and out[at] is None and row[-1]:
            out[at] = self._templates.get(row[-1], str(row[-1]))
        return out

    def _rolled_row(self, row: Sequence[Any]) -> list[Any]:
        n = len(self.group_by)
        vals = row[n : n + len(FIGURES)]
        rates = [round(vals[a] / vals[b], 6) if vals[b] else 0.0 for a, b in _RATE_AT]
        return [*self._labels(row), *vals, *rates]

    async def csv(self) -> AsyncIterator[str]:
        """The report as CSV (RFC 4180, ``\\n`` line ends), in pieces of
        ``CSV_PIECE_ROWS`` rows. Rolled-up rows become lines straight from the
        database's tuples: the labels quoted only when they need it, the figures and
        rates as ``csv.writer`` writes them, their text made once per distinct set of
        figures (small groups repeat them often)."""
        pieces = [",".join(columns(self.group_by)) + "\n"]
        size = 0
        n = len(self.group_by)
        end = n + N_FIGURES
        tails: dict[tuple[int, ...], str] = {}
        async for part, rolled in self._parts():
            if len(tails) > TAIL_CACHE:
                tails.clear()
            if not rolled:
                pieces.extend(_csv_line(r) for r in part)
                size += len(part)
                continue
            labels_of = (
                self._label_texts
                if self._at_period is not None or (self._at_template is not None)
                else None
            )
            for row in part:
                labels = labels_of(row) if labels_of else row[:n]
                head = ",".join([v or "" for v in labels])
                if head.count(",") != n - 1 or _QUOTED.search(head):
                    head = ",".join(map(_csv_field, labels))
                vals = row[n:end]
                tail = tails.get(vals)
                if tail is None:
                    tail = tails[vals] = _figures_text(vals)
                pieces.append(f"{head},{tail}")
            size += len(part)
            if size >= CSV_PIECE_ROWS:
                yield "".join(pieces)
                pieces.clear()
                size = 0
        yield "".join(pieces)

    def _label_texts(self, row: Sequence[Any]) -> list[Any]:
        """``_labels`` with each period's text made once (many rows share a period)."""
        out = list(row[: len(self.group_by)])
        at = self._at_period
        if at is not None:
            raw = out[at]
            text = self._period_texts.get(raw)
            if text is None:
                text = self._period_texts[raw] = _period_label(raw, self.granularity == "day")
            out[at] = text
        at = self._at_template
        if at is not None and out[at] is None and row[-1]:
            out[at] = self._templates.get(row[-1], str(row[-1]))
        return out

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
