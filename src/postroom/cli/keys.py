"""``postroom keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.app import Postroom
from postroom.cli.common import run, settings_or_exit, table

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


# -- keys ------------------------------------------------------------------------------


@keys_app.command("create")
@run
async def keys_create(
    scopes: Annotated[
        list[str], typer.Option("--scopes", help="send, read, manage, admin (comma-separated).")
    ],
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "default",
) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        key, info = await postroom.keys.create(name, scopes)
    finally:
        await postroom.aclose()
    typer.echo(f"Created key {info.prefix} ({name}) with scopes {', '.join(sorted(info.scopes))}.")
    typer.echo("Store it now; it cannot be shown again:", err=True)
    typer.echo(key)


@keys_app.command("list")
@run
async def keys_list() -> None:
    """List API keys (prefixes only; keys themselves are never stored)."""
    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        infos = await postroom.keys.list()
    finally:
        await postroom.aclose()
    if not infos:
        typer.echo("No API keys. Create one with: postroom keys create --scopes admin")
        return
    rows = [("PREFIX", "NAME", "SCOPES", "CREATED", "STATUS")]
    for k in infos:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        rows.append(
            (k.prefix, k.name, ",".join(sorted(k.scopes)), f"{k.created_at:%Y-%m-%d %H:%M}", state)
        )
    typer.echo(table(rows))


@keys_app.command("revoke")
@run
async def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's prefix (pr_...) or id.")],
) -> None:
    """Revoke an API key; it stops working within seconds."""
    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        info = await postroom.keys.revoke(key)
    finally:
        await postroom.aclose()
    typer.echo(f"Revoked key {info.prefix} ({info.name}).")
