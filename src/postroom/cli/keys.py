"""``postroom keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.common import new_typer, run, started, table, when

keys_app = new_typer("Create, list and revoke API keys.")


# -- keys ------------------------------------------------------------------------------


@keys_app.command("create")
@run
async def keys_create(
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scopes", metavar="SCOPES", help="send, read, manage, admin (comma-separated)."
        ),
    ],
    name: Annotated[
        str, typer.Option(metavar="NAME", help="A label to recognise the key by.")
    ] = "default",
) -> None:
    """Create an API key. Only the key goes to stdout (KEY=$(postroom keys create ...));
    the notice goes to stderr."""
    async with started() as postroom:
        key, info = await postroom.keys.create(name, scopes)
    typer.echo(
        f"Created key {info.prefix} ({name}) with scopes {', '.join(sorted(info.scopes))}. "
        "Store it now; it cannot be shown again.",
        err=True,
    )
    typer.echo(key)


@keys_app.command("list")
@run
async def keys_list() -> None:
    """List API keys (prefixes only; keys themselves are never stored) and their last use."""
    async with started() as postroom:
        infos = await postroom.keys.list()
    if not infos:
        typer.echo("No API keys. Create one with: postroom keys create --scopes admin")
        return
    rows = [("PREFIX", "NAME", "SCOPES", "CREATED", "LAST USED", "STATUS")]
    for k in infos:
        state = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        rows.append(
            (
                k.prefix,
                k.name,
                ",".join(sorted(k.scopes)),
                when(k.created_at),
                when(k.last_used_at) if k.last_used_at else "never",
                state,
            )
        )
    typer.echo(table(rows))


@keys_app.command("revoke")
@run
async def keys_revoke(
    key: Annotated[str, typer.Argument(metavar="KEY", hidden=True)],
) -> None:
    """Revoke an API key (KEY: its prefix, pr_..., or id); it stops working within seconds."""
    async with started() as postroom:
        info = await postroom.keys.revoke(key)
    typer.echo(f"Revoked key {info.prefix} ({info.name}).")
