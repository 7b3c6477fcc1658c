"""Dashboard users: hashes, lockout with backoff, sessions, disable, passwd, and the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.errors import Conflict, MessageError
from postroom.services.users import LOCK_AFTER, SESSION_TTL, SignInFailed, lock_for, users_t
from tests.support.processes import POSTROOM, env_for, run_cli

PASSWORD = "a long password"


async def test_the_password_is_stored_as_an_argon2_hash(postroom: Postroom) -> None:
    await postroom.users.create("ann", PASSWORD, "admin")
    async with postroom.engine.connect() as conn:
        stored = (await conn.execute(select(users_t.c.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert (await postroom.users.authenticate("ann", PASSWORD)).is_admin


async def test_bad_input_is_refused(postroom: Postroom) -> None:
    await postroom.users.create("ann", PASSWORD, "viewer")
    with pytest.raises(Conflict):
        await postroom.users.create("ann", PASSWORD, "viewer")
    with pytest.raises(MessageError, match="role"):
        await postroom.users.create("bob", PASSWORD, "root")
    with pytest.raises(MessageError, match="at least 8"):
        await postroom.users.create("bob", "short", "viewer")
    with pytest.raises(MessageError, match="without spaces"):
        await postroom.users.create("bob smith", PASSWORD, "viewer")


async def test_repeated_failures_lock_the_user_with_a_growing_backoff(
    postroom: Postroom, clock: ManualClock
) -> None:
    await postroom.users.create("ann", PASSWORD, "admin")
    for _ in range(LOCK_AFTER):
        with pytest.raises(SignInFailed):
            await postroom.users.authenticate("ann", "guess")
    # locked: even the right password is refused, and the message says until when
    with pytest.raises(SignInFailed, match="too many failed sign-ins"):
        await postroom.users.authenticate("ann", PASSWORD)
    lock = lock_for(LOCK_AFTER)
    assert lock is not None
    clock.advance(lock.total_seconds() + 1)
    with pytest.raises(SignInFailed):
        await postroom.users.authenticate("ann", "guess again")  # sixth failure: longer lock
    clock.advance(lock.total_seconds() + 1)
    with pytest.raises(SignInFailed, match="too many"):
        await postroom.users.authenticate("ann", PASSWORD)
    clock.advance(lock.total_seconds() + 1)
    assert (await postroom.users.authenticate("ann", PASSWORD)).name == "ann"
    assert lock_for(LOCK_AFTER + 1) == 2 * lock and lock_for(1000) is not None


async def test_sessions_expire_and_end_with_disable_or_a_new_password(
    postroom: Postroom, clock: ManualClock
) -> None:
    user = await postroom.users.create("ann", PASSWORD, "admin")
    token, session = await postroom.users.open_session(user)
    assert (await postroom.users.session(token)) == session
    assert await postroom.users.session("forged") is None
    clock.advance(SESSION_TTL.total_seconds() + 1)
    assert await postroom.users.session(token) is None

    token, _ = await postroom.users.open_session(user)
    await postroom.users.set_disabled("ann", True)
    assert await postroom.users.session(token) is None
    with pytest.raises(SignInFailed):
        await postroom.users.authenticate("ann", PASSWORD)
    await postroom.users.set_disabled("ann", False)

    token, _ = await postroom.users.open_session(user)
    await postroom.users.set_password("ann", "another long one")
    assert await postroom.users.session(token) is None
    assert (await postroom.users.authenticate("ann", "another long one")).name == "ann"


def test_cli_create_list_disable_passwd(tmp_path: Path) -> None:
    env = env_for(tmp_path / "var", f"sqlite:///{tmp_path}/var/postroom.db")

    def with_stdin(args: list[str], text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*POSTROOM, *args], env=env, input=text, capture_output=True, text=True, check=False
        )

    assert run_cli(["migrate"], env).returncode == 0
    made = with_stdin(["users", "create", "ann", "--role", "admin", "--password-stdin"], PASSWORD)
    assert (made.returncode, made.stdout.strip()) == (0, "Created admin ann.")
    short = with_stdin(["users", "create", "bob", "--password-stdin"], "short\n")
    assert short.returncode == 1
    assert short.stderr.strip() == "Error: the password must have at least 8 characters"
    again = with_stdin(["users", "create", "ann", "--password-stdin"], PASSWORD)
    assert again.returncode == 1 and "exists already" in again.stderr
    no_tty = with_stdin(["users", "create", "bob"], "")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    assert run_cli(["users", "disable", "ann"], env).stdout.strip() == "Disabled ann."
    listed = run_cli(["users", "list"], env).stdout.splitlines()
    assert listed[1].split()[:3] == ["ann", "admin", "disabled"]
    passwd = with_stdin(["users", "passwd", "ann", "--password-stdin"], "new password 2\n")
    assert passwd.stdout.strip() == "Password of ann changed."
    unknown = run_cli(["users", "disable", "nobody"], env)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "Error: no user named 'nobody'"


def test_the_cli_offers_the_dashboards_roles() -> None:
    from postroom.cli.users import ROLES as CLI_ROLES
    from postroom.services.users import ROLES

    assert CLI_ROLES == ROLES
