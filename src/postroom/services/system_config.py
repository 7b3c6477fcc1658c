"""``GET /config`` and ``PUT /config``: the spec's ``EmailSystemConfig``.

The file/environment settings (``config.py``) are the base; what may change while
Postroom runs lives in the database rows the workers already reload on their own:

- ``defaultProvider`` / ``fallbackProviders``: the providers' ``priority`` (highest
  first; renumbered n..1; the router reloads providers every few seconds and
  ``updated_at`` is bumped so it does);
- ``queueConfig.queues.<name>``: a queue's ``enabled``, ``processor.concurrency`` /
  ``processor.batchSize`` and ``retry`` (workers reload queues every 5 s), and its
  ``guardrail`` thresholds (read at each guardrail check).

Everything else is shown (secrets masked) and refused by ``PUT`` with the setting to
change instead. ``PUT`` checks the whole body first and writes nothing unless all
of it is valid; a 422 lists every problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.engine import make_url

from postroom.analytics import guardrails
from postroom.app import Postroom
from postroom.db.engine import reader
from postroom.db.models import EmailProvider, EmailQueue
from postroom.errors import RequestInvalid
from postroom.queue.retry import RetryConfig, default_retry
from postroom.services.providers import ProviderService

providers_t = cast(Table, EmailProvider.__table__)
queues_t = cast(Table, EmailQueue.__table__)

MASK = "****"
#: sections PUT accepts, and for the others where they are set instead
RUNTIME = ("defaultProvider", "fallbackProviders", "queueConfig")
STATIC_HINT = {
    "enabled": "set by enabling or disabling providers",
    "providers": "change providers through /providers",
    "deliveryConfig": "set POSTROOM_* settings (postroom.toml) and restart",
    "trackingConfig": "not supported yet",
    "templateConfig": "not supported yet",
    "securityConfig": "set POSTROOM_* settings (postroom.toml) and restart",
}
QUEUE_KEYS = ("enabled", "concurrency", "batchSize", "retry", "guardrail")


def _masked_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception:
        return MASK
    return parsed.render_as_string(hide_password=True).replace("***", MASK)


class SystemConfigService:
    def __init__(self, postroom: Postroom) -> None:
        self.postroom = postroom
        self.settings = postroom.settings
        self.engine = postroom.engine

    async def read(self) -> dict[str, Any]:
        s = self.settings
        providers = await ProviderService.of(self.postroom).list_all()
        enabled = sorted(
            (p for p in providers if p.enabled), key=lambda p: (-p.priority, p.created_at)
        )
        defaults = default_retry(s)
        async with reader(self.engine).connect() as conn:
            queue_rows = (await conn.execute(select(queues_t).order_by(queues_t.c.name))).all()
        return {
            "enabled": bool(enabled),
            "providers": [p.dump() for p in providers],
            "defaultProvider": enabled[0].name if enabled else None,
            "fallbackProviders": [p.name for p in enabled[1:]],
            "queueConfig": {
                "defaults": {
                    "concurrency": s.worker.concurrency,
                    "batchSize": s.worker.batch_size,
                    "leaseSeconds": s.worker.lease_s,
                    "retry": defaults.to_json(),
                },
                "queues": {
                    r.name: {
                        "enabled": r.enabled,
                        "paused": r.paused,
                        "priority": r.priority,
                        "concurrency": (r.processor or {}).get("concurrency"),
                        "batchSize": (r.processor or {}).get("batchSize"),
                        "retry": RetryConfig.from_json(r.retry, defaults=defaults).to_json(),
                        "guardrail": guardrails.settings_of(r.monitoring),
                        "guardrailTrip": (r.monitoring or {}).get("guardrailTrip"),
                    }
                    for r in queue_rows
                },
            },
            "deliveryConfig": {
                "defaultFrom": s.default_from or None,
                "maxMessageBytes": s.max_message_bytes,
                "messageIdDomain": s.message_id_domain,
            },
            "trackingConfig": {"enabled": False},
            "templateConfig": {"enabled": False},
            "securityConfig": {
                "secretKey": MASK if s.secret_key else None,
                "databaseUrl": _masked_url(s.effective_database_url),
                "smtpRelay": {"host": s.smtp.host, "port": s.smtp.port},
            },
        }

    async def update(self, body: Any) -> dict[str, Any]:
        """Apply the runtime-changeable parts of ``body``; all or nothing."""
        problems: list[dict[str, str]] = []
        if not isinstance(body, dict):
            raise RequestInvalid([{"field": "body", "message": "must be a JSON object"}])
        for key in body:
            if key in STATIC_HINT:
                problems.append(
                    {"field": key, "message": f"not changeable here: {STATIC_HINT[key]}"}
                )
            elif key not in RUNTIME:
                problems.append({"field": key, "message": "unknown setting"})
        async with reader(self.engine).connect() as conn:
            prov = (
                await conn.execute(
                    select(providers_t.c.id, providers_t.c.name).order_by(
                        providers_t.c.priority.desc(), providers_t.c.created_at
                    )
                )
            ).all()
            queue_rows = (await conn.execute(select(queues_t))).all()
        by_name = {p.name: p.id for p in prov}
        order = self._provider_order(body, by_name, problems)
        queue_updates = self._queue_updates(body.get("queueConfig"), queue_rows, problems)
        if problems:
            raise RequestInvalid(problems)
        if order:  # providers not named keep their relative order after the named ones
            order += [p.name for p in prov if p.name not in order]
        now = self.postroom.clock.now()
        async with self.engine.begin() as conn:
            for rank, name in enumerate(order):
                await conn.execute(
                    update(providers_t)
                    .where(providers_t.c.id == by_name[name])
                    .values(priority=len(order) - rank, updated_at=now)
                )
            for qid, values in queue_updates.items():
                await conn.execute(
                    update(queues_t).where(queues_t.c.id == qid).values(**values, updated_at=now)
                )
        self.postroom.queues.invalidate()
        return await self.read()

    @staticmethod
    def _provider_order(
        body: dict[str, Any], by_name: dict[str, Any], problems: list[dict[str, str]]
    ) -> list[str]:
        """Names in the new priority order (first: the default); [] when not asked."""
        if "defaultProvider" not in body and "fallbackProviders" not in body:
            return []
        first = body.get("defaultProvider")
        rest = body.get("fallbackProviders", [])
        order: list[str] = []
        if first is not None:
            if not isinstance(first, str) or first not in by_name:
                problems.append({"field": "defaultProvider", "message": f"no provider {first!r}"})
            else:
                order.append(first)
        if not isinstance(rest, list) or not all(isinstance(n, str) for n in rest):
            problems.append({"field": "fallbackProviders", "message": "must be a list of names"})
            return order
        for i, name in enumerate(rest):
            if name not in by_name:
                problems.append(
                    {"field": f"fallbackProviders.{i}", "message": f"no provider {name!r}"}
                )
            elif name in order:
                problems.append(
                    {"field": f"fallbackProviders.{i}", "message": f"{name!r} named twice"}
                )
            else:
                order.append(name)
        return order

    @staticmethod
    def _queue_updates(
        raw: Any, rows: Sequence[Any], problems: list[dict[str, str]]
    ) -> dict[Any, dict[str, Any]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or set(raw) - {"queues"}:
            problems.append(
                {"field": "queueConfig", "message": "only 'queues' may change (defaults: restart)"}
            )
            return {}
        queues = raw.get("queues", {})
        if not isinstance(queues, dict):
            problems.append({"field": "queueConfig.queues", "message": "must be an object"})
            return {}
        rows_by_name = {r.name: r for r in rows}
        out: dict[Any, dict[str, Any]] = {}
        for name, change in queues.items():
            at = f"queueConfig.queues.{name}"
            row = rows_by_name.get(name)
            if row is None:
                problems.append({"field": at, "message": f"no queue {name!r}"})
                continue
            if not isinstance(change, dict):
                problems.append({"field": at, "message": "must be an object"})
                continue
            values: dict[str, Any] = {}
            processor = dict(row.processor or {})
            for key, value in change.items():
                field = f"{at}.{key}"
                if key not in QUEUE_KEYS:
                    problems.append({"field": field, "message": f"one of {', '.join(QUEUE_KEYS)}"})
                elif key == "enabled":
                    if not isinstance(value, bool):
                        problems.append({"field": field, "message": "must be true or false"})
                    else:
                        values["enabled"] = value
                elif key in ("concurrency", "batchSize"):
                    if value is not None and (
                        not isinstance(value, int)
                        or isinstance(value, bool)
                        or not 1 <= value <= 1000
                    ):
                        problems.append({"field": field, "message": "must be 1..1000 or null"})
                    elif value is None:
                        processor.pop(key, None)
                    else:
                        processor[key] = value
                elif key == "retry":
                    retry = _check_retry(value, field, problems)
                    if retry is not None:
                        values["retry"] = retry
                else:
                    guard = _check_guardrail(value, field, problems)
                    if guard is not None:
                        values["monitoring"] = {**(row.monitoring or {}), "guardrail": guard}
            if processor != (row.processor or {}):
                values["processor"] = processor
            if values:
                out[row.id] = values
        return out


def _check_retry(value: Any, field: str, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.append({"field": field, "message": "must be an object"})
        return None
    ok = True
    for key, v in value.items():
        bounds = RetryConfig.KEYS.get(key)
        if bounds is None:
            problems.append(
                {"field": f"{field}.{key}", "message": f"one of {', '.join(RetryConfig.KEYS)}"}
            )
            ok = False
        elif (
            not isinstance(v, int | float) or isinstance(v, bool) or not bounds[1] <= v <= bounds[2]
        ):
            problems.append(
                {"field": f"{field}.{key}", "message": f"must be {bounds[1]}..{bounds[2]}"}
            )
            ok = False
    return dict(value) if ok else None


def _check_guardrail(
    value: Any, field: str, problems: list[dict[str, str]]
) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.append({"field": field, "message": "must be an object"})
        return None
    ok = True
    for key, v in value.items():
        at = f"{field}.{key}"
        if key == "enabled":
            if not isinstance(v, bool):
                problems.append({"field": at, "message": "must be true or false"})
                ok = False
            continue
        bounds = guardrails.BOUNDS.get(key)
        if bounds is None:
            names = ", ".join(["enabled", *guardrails.BOUNDS])
            problems.append({"field": at, "message": f"one of {names}"})
            ok = False
        elif (
            not isinstance(v, int | float) or isinstance(v, bool) or not bounds[0] <= v <= bounds[1]
        ):
            problems.append({"field": at, "message": f"must be {bounds[0]}..{bounds[1]}"})
            ok = False
    return dict(value) if ok else None
