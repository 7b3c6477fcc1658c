"""``postroom providers``: list, show, add, update, remove, test, enable, disable.

``add`` checks the connection (the provider's own ``check()``: SMTP connects, says
EHLO, STARTTLS and AUTH; HTTP providers make an authenticated no-op) after the
settings are validated and before anything is stored. A failed check refuses the
provider with a one-line reason and exit status 1, unless ``--no-check`` is given
(for a relay that is not reachable from here yet).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from postroom.cli.common import fail, new_typer, run, started, table, when

if TYPE_CHECKING:
    from pydantic import BaseModel

    from postroom.schemas.providers import LimitUsage, ProviderPublic

providers_app = new_typer(
    "List providers and their health; add, change, test and remove them. "
    "PROVIDER is a provider's name or id."
)

#: PROVIDER: a name or an id (hidden from the Arguments list, which would print ``<str>``)
ProviderArg = Annotated[str, typer.Argument(metavar="PROVIDER", hidden=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]
PairsOpt = list[str] | None
ConfigOpt = Annotated[
    PairsOpt,
    typer.Option(
        "--config",
        metavar="KEY=VALUE",
        help="Setting, e.g. host=smtp.example.com (repeatable).",
    ),
]
AuthOpt = Annotated[
    PairsOpt,
    typer.Option("--auth", metavar="KEY=VALUE", help="Credential, e.g. password=... (repeatable)."),
]
LimitOpt = Annotated[
    PairsOpt,
    typer.Option(
        "--limit", metavar="KEY=VALUE", help="Limit, e.g. rateLimit=10, hourly=1000 (repeatable)."
    ),
]
ConfigJsonOpt = Annotated[
    str | None, typer.Option("--config-json", metavar="JSON", help="All settings as JSON.")
]
AuthJsonOpt = Annotated[
    str | None,
    typer.Option("--auth-json", metavar="JSON", help="All credentials as JSON; '-' reads stdin."),
]
LimitsJsonOpt = Annotated[
    str | None, typer.Option("--limits-json", metavar="JSON", help="All limits as JSON.")
]
PriorityHelp = "Higher is tried first."


def _pairs(items: list[str] | None, option: str, *, typed: bool) -> dict[str, Any]:
    """``KEY=VALUE`` options; with ``typed``, values that are JSON (587, true) are decoded."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"{option} takes KEY=VALUE, not {item!r}", 2)
        if typed:
            with contextlib.suppress(ValueError):
                out[key] = json.loads(value)
                continue
        out[key] = value
    return out


def _json(raw: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object option; ``-`` reads it from standard input (keeps secrets out of ps)."""
    if raw is None:
        return None
    text = sys.stdin.read() if raw == "-" else raw
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise fail(f"{option} is not valid JSON: {exc}", 2) from None
    if not isinstance(value, dict):
        raise fail(f"{option} must be a JSON object", 2)
    return value


def _model(cls: type[BaseModel], **fields: Any) -> Any:
    """Build a request model; a validation error is one line and exit status 2."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise fail(problems, 2) from None


def _usage(u: LimitUsage) -> str:
    window = {"hourly": "hour", "daily": "day"}.get(u.kind) or f"{u.window_ms / 1000:g}s"
    return f"{u.used}/{u.limit} per {window}"


def _latency(p: ProviderPublic) -> str:
    ms = p.health.latency_ms
    return "-" if ms is None else f"{ms:.0f} ms"


# -- looking -----------------------------------------------------------------------------


@providers_app.command("list")
@run
async def providers_list(as_json: JsonOpt = False) -> None:
    """List providers, highest priority first, with their health over all workers."""
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        providers = await ProviderService.of(postroom).list_all()
    if as_json:
        typer.echo(json.dumps([p.dump() for p in providers], indent=2))
        return
    if not providers:
        typer.echo("No providers. Add one with: postroom providers add --type smtp ...")
        return
    header = ("NAME", "TYPE", "PRIORITY", "ENABLED", "STATUS", "SENT/H", "FAILED/H", "LATENCY")
    rows: list[tuple[str, ...]] = [(*header, "LIMITS", "ID")]
    for p in providers:
        h = p.health
        rows.append(
            (
                p.name,
                p.type,
                str(p.priority),
                "yes" if p.enabled else "no",
                h.status,
                str(h.sent_last_hour),
                str(h.failed_last_hour),
                _latency(p),
                ", ".join(_usage(u) for u in h.limits) or "-",
                p.id,
            )
        )
    typer.echo(table(rows))
    for p in providers:
        if p.health.status != "healthy":
            typer.echo(f"{p.name}: {p.health.status}: {p.health.reason}")


@providers_app.command("show")
@run
async def providers_show(provider: ProviderArg, as_json: JsonOpt = False) -> None:
    """Show one provider: settings, masked credentials, health and limit usage."""
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        p = await ProviderService.of(postroom).get(provider)
    if as_json:
        typer.echo(json.dumps(p.dump(), indent=2))
        return
    h = p.health
    check = h.last_check
    rows = [
        ("Provider", p.name),
        ("Id", p.id),
        ("Type", p.type),
        ("Priority", str(p.priority)),
        ("Enabled", "yes" if p.enabled else "no"),
        *(
            [
                (
                    "Guardrail",
                    f"disabled {p.guardrail_trip.get('at')}: {p.guardrail_trip.get('reason')}",
                )
            ]
            if p.guardrail_trip and not p.enabled
            else []
        ),
        ("Config", json.dumps(p.config) if p.config else "-"),
        ("Credentials", json.dumps(p.authentication) if p.authentication else "-"),
        ("Limits", json.dumps(p.limits) if p.limits else "-"),
        ("Status", f"{h.status}: {h.reason}"),
        ("Last hour", f"{h.sent_last_hour} sent, {h.failed_last_hour} failed"),
        ("Latency", _latency(p)),
        ("Limit usage", ", ".join(_usage(u) for u in h.limits) or "-"),
        ("Last error", h.last_error or "-"),
        (
            "Last check",
            f"{when(check.checked_at)} {'ok' if check.ok else 'FAILED'} {check.detail}".rstrip()
            if check
            else "-",
        ),
        ("Updated", when(p.updated_at)),
    ]
    typer.echo(table(rows))


# -- changing ----------------------------------------------------------------------------


@providers_app.command("add")
@run
async def providers_add(
    ptype: Annotated[
        str,
        typer.Option(
            "--type", metavar="TYPE", help="smtp, sendgrid, mailgun, ses, postmark, custom, file."
        ),
    ],
    name: Annotated[str, typer.Option(metavar="NAME", help="A unique name, e.g. 'Primary SMTP'.")],
    priority: Annotated[int, typer.Option(metavar="N", help=PriorityHelp)] = 100,
    config: ConfigOpt = None,
    auth: AuthOpt = None,
    limit: LimitOpt = None,
    config_json: ConfigJsonOpt = None,
    auth_json: AuthJsonOpt = None,
    limits_json: LimitsJsonOpt = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Add it disabled (enable it later).")
    ] = False,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Store it without checking the connection.")
    ] = False,
) -> None:
    """Add a provider: validate it, check the connection, then store it.

    A failed connection check refuses it (exit 1) unless --no-check is given.
    Credentials are stored encrypted and never printed. Values of --config and --limit
    that are JSON (587, true) are decoded; --auth values stay strings.
    """
    from postroom.schemas.providers import ProviderCreate
    from postroom.services.provider_tests import ProviderTester
    from postroom.services.providers import ProviderService

    body = _model(
        ProviderCreate,
        name=name,
        type=ptype,
        priority=priority,
        enabled=not disabled,
        config={
            **(_json(config_json, "--config-json") or {}),
            **_pairs(config, "--config", typed=True),
        },
        authentication={
            **(_json(auth_json, "--auth-json") or {}),
            **_pairs(auth, "--auth", typed=False),
        },
        limits={
            **(_json(limits_json, "--limits-json") or {}),
            **_pairs(limit, "--limit", typed=True),
        },
    )
    async with started() as postroom:
        service = ProviderService.of(postroom)
        if not no_check:
            checked = await ProviderTester(service, postroom.settings).check_unsaved(body)
            if not checked.ok:
                raise fail(
                    f"connection check failed, provider not added: {checked.detail} "
                    "(add it anyway with --no-check)",
                    1,
                )
        p = await service.create(body)
    state = "enabled" if p.enabled else "disabled"
    checked_note = "not checked" if no_check else "connection checked"
    typer.echo(
        f"Added provider {p.name} ({p.type}, priority {p.priority}, {state}, {checked_note}): "
        f"{p.id}"
    )
    if p.authentication:
        typer.echo(f"Credentials stored encrypted: {', '.join(sorted(p.authentication))}")


@providers_app.command("update")
@run
async def providers_update(
    provider: ProviderArg,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="A new name.")] = None,
    priority: Annotated[int | None, typer.Option(metavar="N", help=PriorityHelp)] = None,
    config: ConfigOpt = None,
    auth: AuthOpt = None,
    limit: LimitOpt = None,
    config_json: ConfigJsonOpt = None,
    auth_json: AuthJsonOpt = None,
    limits_json: LimitsJsonOpt = None,
) -> None:
    """Change a provider. KEY=VALUE options change those keys and keep the others;
    the JSON options replace the whole setting."""
    from postroom.schemas.providers import ProviderUpdate
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        service = ProviderService.of(postroom)
        row = await service.row(provider)

        def merged(
            whole: dict[str, Any] | None, pairs: dict[str, Any], stored: dict[str, Any]
        ) -> dict[str, Any] | None:
            if whole is None and not pairs:
                return None  # unchanged
            return {**(stored if whole is None else whole), **pairs}

        fields = {
            "name": name,
            "priority": priority,
            "config": merged(
                _json(config_json, "--config-json"),
                _pairs(config, "--config", typed=True),
                row.config or {},
            ),
            "authentication": merged(
                _json(auth_json, "--auth-json"),
                _pairs(auth, "--auth", typed=False),
                service.secrets(row),
            ),
            "limits": merged(
                _json(limits_json, "--limits-json"),
                _pairs(limit, "--limit", typed=True),
                row.limits or {},
            ),
        }
        given = {k: v for k, v in fields.items() if v is not None}
        if not given:
            raise fail("nothing to change: give --name, --priority, --config, --auth or --limit", 2)
        body = _model(ProviderUpdate, **given)
        p = await service.update(str(row.id), body)
    typer.echo(f"Updated provider {p.name} ({p.type}, priority {p.priority}): {p.id}")


@providers_app.command("remove")
@run
async def providers_remove(provider: ProviderArg) -> None:
    """Remove a provider; mail it sent keeps its history."""
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        service = ProviderService.of(postroom)
        row = await service.row(provider)
        await service.delete(str(row.id))
    typer.echo(f"Removed provider {row.name} ({row.type}): {row.id}")


@providers_app.command("test")
@run
async def providers_test(provider: ProviderArg) -> None:
    """Run the provider's check now (connect and log in; no mail is sent)."""
    from postroom.services.provider_tests import ProviderTester
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        tester = ProviderTester(ProviderService.of(postroom), postroom.settings)
        result = await tester.check(provider)
    latency = "" if result.latency_ms is None else f" in {result.latency_ms:.0f} ms"
    verdict = "OK" if result.ok else "FAILED"
    typer.echo(f"{verdict}: {result.provider}{latency}: {result.detail}")
    if not result.ok:
        raise typer.Exit(1)


async def _set_enabled(provider: str, enabled: bool) -> None:
    from postroom.services.providers import ProviderService

    async with started() as postroom:
        p = await ProviderService.of(postroom).set_enabled(provider, enabled)
    typer.echo(f"{'Enabled' if p.enabled else 'Disabled'} provider {p.name}.")


@providers_app.command("enable")
@run
async def providers_enable(provider: ProviderArg) -> None:
    """Enable a provider; workers start using it within seconds."""
    await _set_enabled(provider, True)


@providers_app.command("disable")
@run
async def providers_disable(provider: ProviderArg) -> None:
    """Disable a provider; workers stop using it within seconds."""
    await _set_enabled(provider, False)
