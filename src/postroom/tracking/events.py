"""Delivery events: record them once, and keep each recipient's status current.

One ``email_tracking`` row per recipient record (the spec's ``DeliveryTracking``),
created by its first event; events go to ``email_tracking_events``. An event
carries a ``dedupe_key`` (the ESP's event id, else a hash of what it says), so
an ESP that delivers the same event three times stores it once. The status only
moves up the spec's ``determineDeliveryStatus`` precedence and each first time only
moves earlier, so events arriving in any order end in the same state. Opens and
clicks flagged as made by machines (privacy proxies, scanners) are stored and
counted but do not move the status.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, Uuid, any_, bindparam, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import String, TypeEngine

from postroom.db.engine import reader
from postroom.db.models import EmailRecord, EmailTracking, EmailTrackingEvent
from postroom.errors import NotFound
from postroom.events import outbox
from postroom.types import EventType, RecordStatus

records_t = cast(Table, EmailRecord.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)

#: the spec's determineDeliveryStatus, strongest first
PRECEDENCE: tuple[str, ...] = (
    EventType.BOUNCED,
    EventType.COMPLAINED,
    EventType.CLICKED,
    EventType.OPENED,
    EventType.DELIVERED,
    EventType.SENT,
)
#: event type -> the email_records column holding its first time
_TIMESTAMP: dict[str, str] = {
    EventType.SENT: "sent_at",
    EventType.DELIVERED: "delivered_at",
    EventType.BOUNCED: "bounced_at",
    EventType.OPENED: "opened_at",
    EventType.CLICKED: "clicked_at",
}
#: event type -> the column holding its first time, machine-made events included
_ANY_TIMESTAMP: dict[str, str] = {
    EventType.OPENED: "opened_any_at",
    EventType.CLICKED: "clicked_any_at",
}
#: every record time column an event may set, in the order of the status update's arrays
TIME_COLUMNS: tuple[str, ...] = (*_TIMESTAMP.values(), *_ANY_TIMESTAMP.values())
#: the record columns recording events reads (:func:`record_rows`, besides the tracking
#: row's id and status)
RECORD_ROW_COLUMNS: tuple[str, ...] = (
    "id", "job_id", "recipient_email", "delivery_id", "message_id", "status", *TIME_COLUMNS,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event about one recipient record, from any source."""

    record_id: uuid.UUID
    type: str
    timestamp: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    #: the ESP's event id; None: a hash of the event is used
    event_id: str | None = None
    user_agent: str | None = None
    ip_address: str | None = None
    machine: bool = False
    #: False: recorded without moving the status (a rejected job that may be retried)
    moves_status: bool = True

    def dedupe_key(self) -> str:
        if self.event_id:
            raw = f"{self.record_id}:{self.type}:id:{self.event_id}"
        else:
            body = json.dumps(dict(self.data), sort_keys=True, default=str)
            raw = f"{self.record_id}:{self.type}:{self.timestamp.isoformat()}:{body}"
        return hashlib.sha256(raw.encode()).hexdigest()


def insert_ignore(conn: AsyncConnection, table: Table, row: Mapping[str, Any] | None = None) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL; without ``row``,
    for many rows passed to ``execute`` (one batched statement)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if row is not None:
        stmt = stmt.values(dict(row))
    return stmt.on_conflict_do_nothing()


def array_param(name: str, column: Any) -> Any:
    """A PostgreSQL array parameter of ``column``'s values, for ``= ANY(…)``."""
    element: TypeEngine[Any] = Uuid() if isinstance(column.type, Uuid) else String()
    return bindparam(name, type_=postgresql.ARRAY(element))


def one_of(conn: AsyncConnection, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter
    whatever the number of values: one statement text and plan for every batch, where
    an expanding IN is parsed and planned anew for each length."""
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    element: TypeEngine[Any] = Uuid() if isinstance(column.type, Uuid) else String()
    return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element)))


def record_rows(*where: Any) -> Any:
    """The records (with their tracking row's id and status, if any) that recording
    events needs: one query, which also tells which status updates would change
    nothing and so need not be sent."""
    return (
        select(
            *(records_t.c[c] for c in RECORD_ROW_COLUMNS),
            tracking_t.c.id.label("tracking_id"),
            tracking_t.c.status.label("tracking_status"),
        )
        .outerjoin(tracking_t, tracking_t.c.email_id == records_t.c.id)
        .where(*where)
    )


async def _tracking_ids(
    conn: AsyncConnection,
    records: Sequence[Any],
    now: datetime,
    moves: Mapping[uuid.UUID, NewEvent],
) -> tuple[dict[uuid.UUID, uuid.UUID], set[uuid.UUID]]:
    """Record id -> its ``email_tracking`` row's id; missing rows are made, all at once,
    and the ids of the records whose row was made here. ``moves``: each record's
    strongest status-moving event of the batch (:func:`_strongest`); a row made here
    starts with the status and time it gives, rather than being made ``sent`` and
    moved in the same transaction (a second version of each new row)."""
    found: dict[uuid.UUID, uuid.UUID] = {r.id: r.tracking_id for r in records if r.tracking_id}
    missing = [r for r in records if r.id not in found]
    made: set[uuid.UUID] = set()
    if missing:
        rows = []
        for r in missing:
            status, at = _initial_status(moves.get(r.id), now)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "email_id": r.id,
                    "delivery_id": r.delivery_id or r.message_id or str(r.id),
                    "recipient_email": r.recipient_email,
                    "tracking_enabled": {"bounces": True, "complaints": True},
                    "status": status,
                    "events": [],
                    "created_at": now,
                    "updated_at": at,
                }
            )
        # the rows made come back; only those another transaction made first need a read
        if conn.dialect.name == "postgresql":
            made_rows = await _execute_pg(
                conn,
                _INSERT_TRACKING_PG,
                {
                    "id": [r["id"] for r in rows],
                    "email_id": [r["email_id"] for r in rows],
                    "delivery_id": [r["delivery_id"] for r in rows],
                    "recipient_email": [r["recipient_email"] for r in rows],
                    "status": [r["status"] for r in rows],
                    "updated_at": [r["updated_at"] for r in rows],
                    "enabled": json.dumps(rows[0]["tracking_enabled"]),
                    "now": now,
                },
                fetch=True,
            )
            inserted = {r["email_id"]: r["id"] for r in made_rows}
        else:
            stmt = insert_ignore(conn, tracking_t).returning(tracking_t.c.email_id, tracking_t.c.id)
            inserted = {r.email_id: r.id for r in await conn.execute(stmt, rows)}
        found.update(inserted)
        made.update(inserted)
        others = [r.id for r in missing if r.id not in found]
        if others:
            stmt = select(tracking_t.c.email_id, tracking_t.c.id).where(
                one_of(conn, tracking_t.c.email_id, others)
            )
            found.update({r.email_id: r.id for r in await conn.execute(stmt)})
    return found, made


def _initial_status(move: NewEvent | None, now: datetime) -> tuple[str, datetime]:
    """A new tracking row's status and time: those of the batch's strongest moving
    event, as the status update would set them, else ``sent`` at ``now``."""
    if move is not None and _stronger(str(move.type), EventType.SENT):
        return str(move.type), move.timestamp
    return str(EventType.SENT), now


#: the tracking rows :func:`_tracking_ids` makes, as arrays (PostgreSQL)
_INSERT_TRACKING_PG = text(
    """
    INSERT INTO email_tracking
        (id, email_id, delivery_id, recipient_email, tracking_enabled, status, events,
         created_at, updated_at)
    SELECT u.id, u.email_id, u.delivery_id, u.recipient_email, CAST(:enabled AS jsonb),
           u.status, CAST('[]' AS jsonb), CAST(:now AS timestamptz), u.updated_at
    FROM unnest(
        CAST(:id AS uuid[]), CAST(:email_id AS uuid[]), CAST(:delivery_id AS text[]),
        CAST(:recipient_email AS text[]), CAST(:status AS text[]),
        CAST(:updated_at AS timestamptz[])
    ) AS u(id, email_id, delivery_id, recipient_email, status, updated_at)
    ON CONFLICT DO NOTHING
    RETURNING email_id, id
    """
)


async def record_event(conn: AsyncConnection, event: NewEvent) -> uuid.UUID | None:
    """Store ``event`` in the caller's transaction; returns its id, or None if it was
    already stored (a duplicate) or its record does not exist."""
    return (await record_many(conn, [event]))[0]


async def record_many(
    conn: AsyncConnection,
    events: Sequence[NewEvent],
    records: Mapping[uuid.UUID, Any] | None = None,
    *,
    all_new: bool = False,
) -> list[uuid.UUID | None]:
    """Store ``events`` in the caller's transaction with a fixed number of statements
    whatever their number; per event its new id, or None (a duplicate, in the table or
    earlier in ``events``, or no such record). ``records``: :func:`record_rows` rows
    by id, read in this transaction, when the caller has them already. ``all_new``:
    each event is new whatever it says (an open or a click: every request is one), so
    there is nothing to deduplicate: they are stored without a dedupe key (no entry in
    its unique index, no key to hash) and without a conflict check, on PostgreSQL by
    the statement that moves the statuses."""
    if not events:
        return []
    if records is None:
        wanted = list({e.record_id for e in events})
        found = await conn.execute(record_rows(one_of(conn, records_t.c.id, wanted)))
        records = {r.id: r for r in found}
    present = [records[i] for i in dict.fromkeys(e.record_id for e in events) if i in records]
    if not present:
        return [None] * len(events)
    moves = _strongest(events)
    tracking, made = await _tracking_ids(conn, present, min(e.timestamp for e in events), moves)
    rows: list[dict[str, Any]] = []
    slot: dict[str, int] = {}  # dedupe key -> index of its event
    out: list[uuid.UUID | None] = [None] * len(events)
    for i, ev in enumerate(events):
        if ev.record_id not in tracking:
            continue
        key = None if all_new else ev.dedupe_key()
        if key is not None:
            if key in slot:
                continue
            slot[key] = i
        rows.append(
            {
                "id": uuid.uuid4(),
                "tracking_id": tracking[ev.record_id],
                "type": str(ev.type),
                "timestamp": ev.timestamp,
                "data": dict(ev.data),
                "user_agent": ev.user_agent,
                "ip_address": ev.ip_address,
                "dedupe_key": key,
                "machine": ev.machine,
            }
        )
        if all_new:
            out[i] = rows[-1]["id"]
    if not rows:
        return out
    if all_new:
        # nothing to deduplicate: on PostgreSQL the events and the status moves in one
        # statement
        new = [ev for ev, event_id in zip(events, out, strict=True) if event_id]
        # every event of a record with a tracking row is stored: the batch's moves
        moved = {record_id: ev for record_id, ev in moves.items() if record_id in tracking}
        if conn.dialect.name == "postgresql":
            params = _event_params(conn, rows)
            await _apply_status(conn, new, records, tracking, made, events=params, strongest=moved)
        else:
            await conn.execute(insert(events_t), rows)
            await _apply_status(conn, new, records, tracking, made, strongest=moved)
        await _outbox(conn, new)
        return out
    # ON CONFLICT DO NOTHING … RETURNING: the keys stored before (or by a concurrent
    # transaction) come back missing, so one statement both deduplicates and inserts
    if conn.dialect.name == "postgresql":
        stored = await _insert_events_pg(conn, rows)
    else:
        stmt = insert_ignore(conn, events_t).returning(events_t.c.dedupe_key)
        stored = set((await conn.execute(stmt, rows)).scalars())
    for row in rows:
        if row["dedupe_key"] in stored:
            out[slot[row["dedupe_key"]]] = row["id"]
    new = [ev for ev, event_id in zip(events, out, strict=True) if event_id]
    await _apply_status(conn, new, records, tracking, made)
    await _outbox(conn, new)
    return out


async def _outbox(conn: AsyncConnection, new: Sequence[NewEvent]) -> None:
    """The event webhooks' outbox rows of the events just stored."""
    await outbox.tracked(
        conn,
        lambda: [
            (ev.record_id, str(ev.type), ev.timestamp, _webhook_data(ev))
            for ev in new
            if ev.type != EventType.SENT  # the write-back reports sends itself
        ],
    )


#: the events of a batch as one JSON document, an array of rows (each the columns in
#: order): a statement of fixed text, prepared once per connection, whatever the batch
#: size. Encoding the document costs a fraction of binding one array per column (the
#: driver checks and converts every element of every array), and reading it costs the
#: server less than taking nine arrays apart. ``data`` is a JSON string in the row,
#: made by the engine's serializer as any JSON column's value is.
_EVENTS_SQL = """
    INSERT INTO email_tracking_events
        (id, tracking_id, type, timestamp, data, user_agent, ip_address, dedupe_key, machine)
    SELECT CAST(e ->> 0 AS uuid), CAST(e ->> 1 AS uuid), e ->> 2, CAST(e ->> 3 AS timestamptz),
           CAST(e ->> 4 AS jsonb), e ->> 5, CAST(e ->> 6 AS inet), e ->> 7,
           CAST(e ->> 8 AS boolean)
    FROM jsonb_array_elements(CAST(:events AS jsonb)) AS e
"""
_INSERT_EVENTS_PG = text(f"{_EVENTS_SQL} ON CONFLICT DO NOTHING RETURNING dedupe_key")


def _event_params(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameter of :data:`_EVENTS_SQL`: the rows as one JSON document."""
    dumps = getattr(conn.dialect, "_json_serializer", None) or json.dumps
    doc = [
        (
            r["id"],
            r["tracking_id"],
            r["type"],
            r["timestamp"],
            dumps(r["data"]),
            r["user_agent"],
            r["ip_address"],
            r["dedupe_key"],
            r["machine"],
        )
        for r in rows
    ]
    # ids read from the database are the driver's UUID type: written by str()
    return {"events": orjson.dumps(doc, default=str, option=orjson.OPT_NAIVE_UTC).decode()}


async def _insert_events_pg(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """The dedupe keys of ``rows`` stored now (PostgreSQL: one array-bound statement)."""
    found = await _execute_pg(conn, _INSERT_EVENTS_PG, _event_params(conn, rows), fetch=True)
    return {r["dedupe_key"] for r in found}


async def driver_connection(conn: AsyncConnection) -> Any:
    """The driver's (asyncpg's) connection under ``conn``, inside ``conn``'s transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN only before its first statement; a
    statement sent on the driver first would run (and commit) on its own, so the
    adapter's transaction is begun here, as its own first statement would."""
    raw = await conn.get_raw_connection()
    adapter: Any = raw.dbapi_connection
    if adapter._transaction is None:
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
    if adapter._transaction is None:  # an adapter that works otherwise: never unguarded
        raise RuntimeError("no transaction on the database connection")
    return raw.driver_connection


def _webhook_data(event: NewEvent) -> dict[str, Any]:
    """What an event webhook says about ``event`` beside the record's fields."""
    data: dict[str, Any] = {**event.data, "machine": event.machine}
    if event.user_agent:
        data["userAgent"] = event.user_agent
    if event.ip_address:
        data["ipAddress"] = event.ip_address
    return data


def _one_of(column: Any, values: Sequence[str]) -> Any:
    """``column IN (…)`` as plain parameters: an expanding IN cannot be executemany'd."""
    return or_(*(column == v for v in values))


def _moves(ev: NewEvent) -> bool:
    return not ev.machine and ev.moves_status and str(ev.type) in PRECEDENCE


def _strongest(events: Iterable[NewEvent]) -> dict[uuid.UUID, NewEvent]:
    """Each record's strongest status-moving event (of several as strong, the first)."""
    strongest: dict[uuid.UUID, NewEvent] = {}
    for ev in events:
        if _moves(ev):
            best = strongest.get(ev.record_id)
            if best is None or _stronger(str(ev.type), str(best.type)):
                strongest[ev.record_id] = ev
    return strongest


def _tracking_moves(
    record_id: uuid.UUID, kind: str, rec: Any, made: AbstractSet[uuid.UUID]
) -> bool:
    """Whether ``kind`` moves the record's tracking row as last read (a row this batch
    made has the batch's strongest status already)."""
    if record_id in made:
        return False
    return rec.tracking_status is None or _stronger(kind, rec.tracking_status)


def _stronger(kind: str, than: str | None) -> bool:
    return than not in PRECEDENCE or PRECEDENCE.index(kind) < PRECEDENCE.index(str(than))


async def _apply_status(
    conn: AsyncConnection,
    stored: Sequence[NewEvent],
    records: Mapping[uuid.UUID, Any],
    tracking: Mapping[uuid.UUID, uuid.UUID],
    made: AbstractSet[uuid.UUID] = frozenset(),
    *,
    events: Mapping[str, Any] | None = None,
    strongest: Mapping[uuid.UUID, NewEvent] | None = None,
) -> None:
    """Move each record's status up to its strongest new event, and keep first times.
    ``made``: the records whose tracking row this batch made, already with that status;
    ``strongest``: ``_strongest(stored)`` when the caller has it already.

    Events are only ever added, so the strongest event and the earliest time of each
    kind do not depend on arrival order. Each update is conditional in SQL, so two
    batches applied at once cannot overwrite a stronger status with a weaker one; the
    updates are one batched statement per event type, not one per event, and only
    for the records whose status or time they change as last read (a status only
    moves up and a first time only earlier, so a skipped update stays a no-op).
    """
    if strongest is None:
        strongest = _strongest(stored)
    first: dict[tuple[str, uuid.UUID], datetime] = {}
    for ev in stored:
        kind = str(ev.type)
        columns = [_ANY_TIMESTAMP.get(kind)]  # machine-made too: analytics counts both
        if _moves(ev):
            columns.append(_TIMESTAMP.get(kind))
        for column in columns:
            if column is not None:
                at = first.get((column, ev.record_id))
                if at is None or ev.timestamp < at:
                    first[(column, ev.record_id)] = ev.timestamp
    if conn.dialect.name == "postgresql":
        await _apply_status_pg(conn, strongest, first, records, tracking, made, events)
        return
    if events is not None:
        raise ValueError("events are inserted with the status moves on PostgreSQL only")
    moves_tracking: dict[str, list[dict[str, Any]]] = {}
    moves_record: dict[str, list[dict[str, Any]]] = {}
    for record_id, ev in strongest.items():
        kind, rec = str(ev.type), records[record_id]
        if _tracking_moves(record_id, kind, rec, made):
            moves_tracking.setdefault(kind, []).append(
                {"b_tid": tracking[record_id], "b_at": ev.timestamp}
            )
        if rec.status in (RecordStatus.QUEUED, RecordStatus.FAILED) or _stronger(kind, rec.status):
            moves_record.setdefault(kind, []).append({"b_rid": record_id})
    for kind, params in moves_tracking.items():
        weaker = PRECEDENCE[PRECEDENCE.index(kind) + 1 :]
        await conn.execute(
            update(tracking_t)
            .where(tracking_t.c.id == bindparam("b_tid"), _one_of(tracking_t.c.status, weaker))
            .values(status=kind, updated_at=bindparam("b_at")),
            params,
        )
    for kind, params in moves_record.items():
        weaker = PRECEDENCE[PRECEDENCE.index(kind) + 1 :]
        replaceable = [*weaker, RecordStatus.QUEUED, RecordStatus.FAILED]
        await conn.execute(
            update(records_t)
            .where(records_t.c.id == bindparam("b_rid"), _one_of(records_t.c.status, replaceable))
            .values(status=kind),
            params,
        )
    by_column: dict[str, list[dict[str, Any]]] = {}
    for (column, record_id), at in first.items():
        known = getattr(records[record_id], column)
        if known is None or known > at:
            by_column.setdefault(column, []).append({"b_rid": record_id, "b_at": at})
    for column, params in by_column.items():
        col = records_t.c[column]
        await conn.execute(
            update(records_t)
            .where(
                records_t.c.id == bindparam("b_rid"),
                or_(col.is_(None), col > bindparam("b_at")),
            )
            .values({column: bindparam("b_at")}),
            params,
        )


_REPLACEABLE = (RecordStatus.QUEUED.value, RecordStatus.FAILED.value)

# One UPDATE per table per batch (PostgreSQL), as arrays: the same conditions as the
# per-type statements, in SQL, so a concurrent batch's stronger status or earlier
# time still wins. A status moves to a stronger one of PRECEDENCE (or from queued or
# failed); LEAST ignores NULL, so a time column only ever moves earlier.
_TRACKING_SQL = """
    UPDATE email_tracking AS t SET status = u.status, updated_at = u.at
    FROM unnest(
        CAST(:t_id AS uuid[]), CAST(:t_status AS text[]), CAST(:t_at AS timestamptz[])
    ) AS u(id, status, at)
    WHERE t.id = u.id
      AND array_position(CAST(:precedence AS text[]), t.status::text)
          > array_position(CAST(:precedence AS text[]), u.status)
"""
_RECORDS_SQL = f"""
    UPDATE email_records AS r SET
        status = CASE
            WHEN u.status IS NOT NULL AND (
                r.status::text = ANY(CAST(:replaceable AS text[]))
                OR array_position(CAST(:precedence AS text[]), r.status::text)
                   > array_position(CAST(:precedence AS text[]), u.status))
            THEN u.status ELSE r.status END,
        {", ".join(f"{c} = LEAST(r.{c}, u.{c})" for c in TIME_COLUMNS)}
    FROM unnest(
        CAST(:id AS uuid[]), CAST(:status AS text[]),
        {", ".join(f"CAST(:{c} AS timestamptz[])" for c in TIME_COLUMNS)}
    ) AS u(id, status, {", ".join(TIME_COLUMNS)})
    WHERE r.id = u.id
"""
#: by (tracking rows move, records change): both in one statement (a first open or
#: delivery moves both), one round trip; a data-modifying WITH runs whether or not
#: it is read
_UPDATE_PG = {
    (True, False): text(_TRACKING_SQL),
    (False, True): text(_RECORDS_SQL),
    (True, True): text(f"WITH moved_tracking AS ({_TRACKING_SQL}) {_RECORDS_SQL}"),
}
#: the same, inserting a batch of new events (:data:`_EVENTS_SQL`) in that statement
_WITH_EVENTS_PG = {
    (False, False): text(_EVENTS_SQL),
    (True, False): text(f"WITH stored AS ({_EVENTS_SQL}) {_TRACKING_SQL}"),
    (False, True): text(f"WITH stored AS ({_EVENTS_SQL}) {_RECORDS_SQL}"),
    (True, True): text(
        f"WITH stored AS ({_EVENTS_SQL}), moved_tracking AS ({_TRACKING_SQL}) {_RECORDS_SQL}"
    ),
}


async def _apply_status_pg(
    conn: AsyncConnection,
    strongest: Mapping[uuid.UUID, NewEvent],
    first: Mapping[tuple[str, uuid.UUID], datetime],
    records: Mapping[uuid.UUID, Any],
    tracking: Mapping[uuid.UUID, uuid.UUID],
    made: AbstractSet[uuid.UUID],
    events: Mapping[str, Any] | None = None,
) -> None:
    """:func:`_apply_status`'s writes on PostgreSQL: at most one statement, only for
    the records whose status or a time it changes as last read; with ``events``
    (:func:`_event_params`), that statement also inserts those events."""
    t_ids: list[uuid.UUID] = []
    t_status: list[str] = []
    t_at: list[datetime] = []
    changes: dict[uuid.UUID, dict[str, Any]] = {}
    for record_id, ev in strongest.items():
        kind, rec = str(ev.type), records[record_id]
        if _tracking_moves(record_id, kind, rec, made):
            t_ids.append(tracking[record_id])
            t_status.append(kind)
            t_at.append(ev.timestamp)
        if rec.status in _REPLACEABLE or _stronger(kind, rec.status):
            changes.setdefault(record_id, {})["status"] = kind
    for (column, record_id), at in first.items():
        known = getattr(records[record_id], column)
        if known is None or known > at:
            changes.setdefault(record_id, {})[column] = at
    params: dict[str, Any] = {"precedence": [str(p) for p in PRECEDENCE]}
    if t_ids:
        params.update(t_id=t_ids, t_status=t_status, t_at=t_at)
    if changes:
        ids = sorted(changes)  # one lock order for every batch
        params.update(
            id=ids,
            status=[changes[i].get("status") for i in ids],
            replaceable=list(_REPLACEABLE),
        )
        for column in TIME_COLUMNS:
            params[column] = [changes[i].get(column) for i in ids]
    which = (bool(t_ids), bool(changes))
    if events is not None:
        await _execute_pg(conn, _WITH_EVENTS_PG[which], {**params, **events})
    elif which != (False, False):
        await _execute_pg(conn, _UPDATE_PG[which], params)


#: text statement -> (its SQL with $n parameters, the parameter names in that order)
_POSITIONAL: dict[Any, tuple[str, tuple[str, ...]]] = {}


async def _execute_pg(
    conn: AsyncConnection, stmt: Any, params: Mapping[str, Any], *, fetch: bool = False
) -> Any:
    """Run a fixed ``text()`` statement on the driver's connection (PostgreSQL): its
    compiled form is kept, and the driver prepares it once per connection; no
    statement or result processing in the SQL layer for each batch."""
    compiled = _POSITIONAL.get(stmt)
    if compiled is None:
        c = stmt.compile(dialect=conn.dialect)
        compiled = _POSITIONAL[stmt] = (str(c), tuple(c.positiontup or ()))
    sql, names = compiled
    driver = await driver_connection(conn)
    args = [params[n] for n in names]
    return await (driver.fetch(sql, *args) if fetch else driver.execute(sql, *args))


def _bare_id(message_id: str) -> str:
    return message_id.strip().strip("<>")


#: built once: the statement is taken from the compiled cache, not rebuilt per batch
_RECORDS_BY_MESSAGE_ID_PG = record_rows(
    records_t.c.message_id == any_(array_param("message_ids", records_t.c.message_id))
)


async def find_record(
    conn: AsyncConnection, message_id: str, recipient: str | None
) -> uuid.UUID | None:
    """The record an ESP event is about: by provider message id (with or without
    angle brackets) and, when one email went to several recipients, the address."""
    found = await find_records(conn, [(message_id, recipient)])
    return found[0].id if found[0] is not None else None


async def find_records(conn: AsyncConnection, refs: Sequence[tuple[str, str | None]]) -> list[Any]:
    """:func:`find_record` for many (message id, recipient) pairs in one query: per
    pair its :func:`record_rows` row, or None (no record, or no single one)."""
    ids = {v for mid, _ in refs for v in (_bare_id(mid), f"<{_bare_id(mid)}>")}
    by_id: dict[str, list[Any]] = {}
    if ids:
        if conn.dialect.name == "postgresql":
            found = await conn.execute(_RECORDS_BY_MESSAGE_ID_PG, {"message_ids": list(ids)})
        else:
            found = await conn.execute(record_rows(records_t.c.message_id.in_(ids)))
        for row in found:
            by_id.setdefault(_bare_id(row.message_id), []).append(row)
    out: list[Any] = []
    for mid, recipient in refs:
        rows = by_id.get(_bare_id(mid), [])
        if recipient:
            address = recipient.strip().lower()
            rows = [r for r in rows if r.recipient_email.lower() == address]
        out.append(rows[0] if len(rows) == 1 else None)
    return out


# -- reading -----------------------------------------------------------------------------


async def _resolve(conn: AsyncConnection, ident: str) -> Any:
    """A recipient record by its id, its email's id (single recipient) or its delivery id."""
    key: uuid.UUID | None
    try:
        key = uuid.UUID(ident)
    except ValueError:
        key = None
    if key is not None:
        rec = (await conn.execute(select(records_t).where(records_t.c.id == key))).first()
        if rec is not None:
            return rec
        recs = (await conn.execute(select(records_t).where(records_t.c.job_id == key))).all()
        if len(recs) == 1:
            return recs[0]
        if recs:
            raise NotFound(
                f"email {ident!r} has {len(recs)} recipients: ask for one by its record id "
                "(see GET /status/{id})"
            )
    bare = ident.strip().strip("<>")
    rec = (
        await conn.execute(
            select(records_t).where(
                records_t.c.delivery_id.in_({bare, f"<{bare}>"})
                | records_t.c.message_id.in_({bare, f"<{bare}>"})
            )
        )
    ).first()
    if rec is None:
        raise NotFound(f"no tracking for {ident!r}")
    return rec


def event_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(row.id),
        "type": row.type,
        "timestamp": row.timestamp.isoformat(),
        "data": row.data or {},
        "machine": bool(row.machine),
    }
    if row.user_agent:
        out["userAgent"] = row.user_agent
    if row.ip_address:
        out["ipAddress"] = str(row.ip_address)
    return out


def summarize(rows: list[Any]) -> dict[str, Any]:
    """Counts per event type; opens and clicks also as human-only counts."""
    total = Counter(r.type for r in rows)
    human = Counter(r.type for r in rows if not r.machine)
    summary: dict[str, Any] = {str(k): total[k] for k in sorted(total)}
    for kind in (EventType.OPENED, EventType.CLICKED):
        summary[f"{kind}Human"] = human[kind]
        summary[f"{kind}Total"] = total[kind]
    return summary


async def events_of(
    conn: AsyncConnection, record_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    """Events per record id, oldest first."""
    out: dict[uuid.UUID, list[Any]] = {r: [] for r in record_ids}
    if not record_ids:
        return out
    rows = (
        await conn.execute(
            select(events_t, tracking_t.c.email_id)
            .join(tracking_t, tracking_t.c.id == events_t.c.tracking_id)
            .where(tracking_t.c.email_id.in_(record_ids))
            .order_by(events_t.c.timestamp, events_t.c.id)
        )
    ).all()
    for row in rows:
        out[row.email_id].append(row)
    return out


async def delivery_status(engine: AsyncEngine, ident: str) -> dict[str, Any]:
    """The spec's ``getDeliveryStatus``: status, events, summary and timeline."""
    async with reader(engine).connect() as conn:
        rec = await _resolve(conn, ident)
        rows = (await events_of(conn, [rec.id]))[rec.id]
        tracking = (
            await conn.execute(select(tracking_t).where(tracking_t.c.email_id == rec.id))
        ).first()
    events = [event_json(r) for r in rows]
    return {
        "deliveryId": (tracking.delivery_id if tracking else None)
        or rec.delivery_id
        or str(rec.id),
        "recordId": str(rec.id),
        "emailId": str(rec.job_id) if rec.job_id else None,
        "recipient": rec.recipient_email,
        "status": rec.status,
        "events": events,
        "summary": summarize(rows),
        "timeline": [
            {"type": e["type"], "timestamp": e["timestamp"], "machine": e["machine"]}
            for e in events
        ],
    }
