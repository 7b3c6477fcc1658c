"""``postroom domains``: sender domains and their DKIM keys."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.common import new_typer, run, started, table, when

domains_app = new_typer("Sender domains and their DKIM keys.")

Algorithm = Annotated[
    str, typer.Option(metavar="ALG", help="rsa (2048 bits) or ed25519 (needs pynacl).")
]


def _show_record(dns_name: str, record: str) -> None:
    typer.echo(f"Publish this TXT record:\n  {dns_name}\n  {record}")


@domains_app.command("add")
@run
async def domains_add(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", hidden=True)],
    algorithm: Algorithm = "rsa",
) -> None:
    """Generate a DKIM key for DOMAIN; mail from it is signed from now on."""
    if algorithm not in ("rsa", "ed25519"):
        raise typer.BadParameter("rsa or ed25519", param_hint="--algorithm")
    async with started() as postroom:
        found = await postroom.domains.add(domain, algorithm)  # type: ignore[arg-type]
    assert found.active is not None
    typer.echo(f"{found.domain}: selector {found.active.selector}")
    _show_record(found.active.dns_name, found.active.txt_record)


@domains_app.command("list")
@run
async def domains_list() -> None:
    """List sender domains and their keys."""
    async with started() as postroom:
        found = await postroom.domains.list_all()
    if not found:
        typer.echo("No sender domains. Add one with: postroom domains add example.com")
        return
    rows = [("DOMAIN", "SELECTOR", "ALG", "ACTIVE", "CREATED", "RETIRED")]
    rows += [
        (
            k.domain,
            k.selector,
            k.algorithm,
            "yes" if k.active else "no",
            when(k.created_at),
            when(k.retired_at),
        )
        for d in found
        for k in d.keys
    ]
    typer.echo(table(rows))


@domains_app.command("rotate")
@run
async def domains_rotate(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", hidden=True)],
) -> None:
    """Sign with a new key under a new selector; keep the old record published a while."""
    async with started() as postroom:
        found = await postroom.domains.rotate(domain)
    assert found.active is not None
    typer.echo(f"{found.domain}: now selector {found.active.selector}")
    _show_record(found.active.dns_name, found.active.txt_record)


@domains_app.command("check")
@run
async def domains_check(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", hidden=True)],
) -> None:
    """Look up the active key's TXT record in DNS; exit status 1 when it does not match."""
    async with started() as postroom:
        result = await postroom.domains.check(domain)
    typer.echo(f"{result.dns_name}: {result.detail}")
    if not result.matches:
        _show_record(result.dns_name, result.expected)
        raise typer.Exit(1)
