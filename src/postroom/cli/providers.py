"""``postroom providers``: list providers with their health, add, test, enable, disable."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from postroom.app import Postroom
from postroom.cli.common import fail, run, settings_or_exit, table
from postroom.schemas.providers import LimitUsage, ProviderCreate, ProviderPublic
from postroom.services.provider_tests import ProviderTester
from postroom.services.providers import ProviderService

providers_app = typer.Typer(
    help="List providers and their health; add, test, enable and disable them.",
    no_args_is_help=True,
)

ProviderArg = Annotated[str, typer.Argument(help="The provider's name or id.")]


@contextlib.asynccontextmanager
async def _postroom() -> AsyncIterator[Postroom]:
    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        yield postroom
    finally:
        await postroom.aclose()


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


def _json(raw: str | None, option: str) -> dict[str, Any]:
    """A JSON object option; ``-`` reads it from standard input (keeps secrets out of ps)."""
    if raw is None:
        return {}
    text = sys.stdin.read() if raw == "-" else raw
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise fail(f"{option} is not valid JSON: {exc}", 2) from None
    if not isinstance(value, dict):
        raise fail(f"{option} must be a JSON object", 2)
    return value


def _usage(u: LimitUsage) -> str:
    window = {"hourly": "hour", "daily": "day"}.get(u.kind) or f"{u.window_ms / 1000:g}s"
    return f"{u.used}/{u.limit} per {window}"


def _latency(p: ProviderPublic) -> str:
    ms = p.health.latency_ms
    return "-" if ms is None else f"{ms:.0f} ms"


# -- providers ---------------------------------------------------------------------------


@providers_app.command("list")
@run
async def providers_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")] = False,
) -> None:
    """List providers, highest priority first, with their health over all workers."""
    async with _postroom() as postroom:
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


@providers_app.command("add")
@run
async def providers_add(
    ptype: Annotated[
        str, typer.Option("--type", help="smtp, sendgrid, mailgun, ses, postmark, custom, file.")
    ],
    name: Annotated[str, typer.Option(help="A unique name, e.g. 'Primary SMTP'.")],
    priority: Annotated[int, typer.Option(help="Higher is tried first.")] = 100,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", help="Setting as KEY=VALUE, e.g. host=smtp.example.com (repeat)."),
    ] = None,
    auth: Annotated[
        list[str] | None,
        typer.Option("--auth", help="Credential as KEY=VALUE, e.g. password=... (repeat)."),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="Limit as KEY=VALUE, e.g. rateLimit=10, hourly=1000."),
    ] = None,
    config_json: Annotated[
        str | None, typer.Option("--config-json", help="All settings as a JSON object.")
    ] = None,
    auth_json: Annotated[
        str | None,
        typer.Option("--auth-json", help="Credentials as a JSON object; '-' reads stdin."),
    ] = None,
    limits_json: Annotated[
        str | None, typer.Option("--limits-json", help="Limits as a JSON object.")
    ] = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Add it disabled (enable it later).")
    ] = False,
) -> None:
    """Add a provider (checked before it is stored).

    Credentials are stored encrypted and never printed. Values of --config and --limit
    that are JSON (587, true) are decoded; --auth values stay strings.
    """
    try:
        body = ProviderCreate(
            name=name,
            type=ptype,
            priority=priority,
            enabled=not disabled,
            config={
                **_json(config_json, "--config-json"),
                **_pairs(config, "--config", typed=True),
            },
            authentication={
                **_json(auth_json, "--auth-json"),
                **_pairs(auth, "--auth", typed=False),
            },
            limits={**_json(limits_json, "--limits-json"), **_pairs(limit, "--limit", typed=True)},
        )
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise fail(problems, 2) from None
    async with _postroom() as postroom:
        p = await ProviderService.of(postroom).create(body)
    state = "enabled" if p.enabled else "disabled"
    typer.echo(f"Added provider {p.name} ({p.type}, priority {p.priority}, {state}): {p.id}")
    if p.authentication:
        typer.echo(f"Credentials stored encrypted: {', '.join(sorted(p.authentication))}")


@providers_app.command("test")
@run
async def providers_test(provider: ProviderArg) -> None:
    """Run the provider's check now (connect and log in; no mail is sent)."""
    async with _postroom() as postroom:
        result = await ProviderTester(ProviderService.of(postroom), postroom.settings).check(
            provider
        )
    latency = "" if result.latency_ms is None else f" in {result.latency_ms:.0f} ms"
    verdict = "OK" if result.ok else "FAILED"
    typer.echo(f"{verdict}: {result.provider}{latency}: {result.detail}")
    if not result.ok:
        raise typer.Exit(1)


async def _set_enabled(provider: str, enabled: bool) -> None:
    async with _postroom() as postroom:
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
