"""``postroom users``: the people who may sign in to the web dashboard."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from postroom.cli.common import fail, new_typer, run, settings_or_exit, table

if TYPE_CHECKING:
    from postroom.app import Postroom

users_app = new_typer("Create and manage dashboard users.")

#: the dashboard's roles (services.users.ROLES; not imported here, to keep the CLI light)
ROLES = ("admin", "viewer")


def _postroom() -> Postroom:
    from postroom.app import Postroom

    return Postroom(settings_or_exit())


PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


def _password(from_stdin: bool) -> str:
    """The password from stdin, or asked twice at a hidden prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise fail("no terminal to ask for the password: use --password-stdin")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    from postroom.errors import MessageError
    from postroom.services.users import check_password

    try:
        check_password(password)
    except MessageError as exc:
        raise fail(exc.message) from None
    return password


@users_app.command("create")
@run
async def users_create(
    name: Annotated[str, typer.Argument(help="The name to sign in with.")],
    role: Annotated[
        str,
        typer.Option(
            metavar="admin|viewer", help="admin (may change providers, queues, keys) or viewer."
        ),
    ] = "viewer",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a dashboard user."""
    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}")
    password = _password(password_stdin)
    postroom = _postroom()
    try:
        await postroom.start()
        user = await postroom.users.create(name, password, role)
    finally:
        await postroom.aclose()
    typer.echo(f"Created {user.role} {user.name}.")


@users_app.command("list")
@run
async def users_list() -> None:
    """List dashboard users."""
    postroom = _postroom()
    try:
        await postroom.start()
        users = await postroom.users.list()
    finally:
        await postroom.aclose()
    if not users:
        typer.echo("No dashboard users. Create one with: postroom users create NAME --role admin")
        return
    rows = [("NAME", "ROLE", "STATUS", "LAST SIGN-IN", "CREATED")]
    for u in users:
        state = "disabled" if u.disabled else "active"
        last = f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "-"
        rows.append((u.name, u.role, state, last, f"{u.created_at:%Y-%m-%d %H:%M}"))
    typer.echo(table(rows))


@users_app.command("disable")
@run
async def users_disable(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable the user again.")] = False,
) -> None:
    """Disable a user (and end their sessions), or enable them again with --enable."""
    postroom = _postroom()
    try:
        await postroom.start()
        user = await postroom.users.set_disabled(name, not enable)
    finally:
        await postroom.aclose()
    typer.echo(f"{'Disabled' if user.disabled else 'Enabled'} {user.name}.")


@users_app.command("passwd")
@run
async def users_passwd(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a user's password; lifts a lockout and signs them out everywhere."""
    password = _password(password_stdin)
    postroom = _postroom()
    try:
        await postroom.start()
        user = await postroom.users.set_password(name, password)
    finally:
        await postroom.aclose()
    typer.echo(f"Password of {user.name} changed.")
