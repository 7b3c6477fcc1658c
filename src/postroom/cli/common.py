"""What every command shares: settings, error rendering, tables.

Nothing heavy is imported at module level (no pydantic, SQLAlchemy, FastAPI): the
command line imports this for ``--version`` and ``--help`` too, which must start at
once. Each command imports what it needs when it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from postroom.app import Postroom
    from postroom.config import Settings

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from postroom.config import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"invalid configuration: {problems}", 2) from None


@contextlib.asynccontextmanager
async def started(settings: Settings | None = None) -> AsyncIterator[Postroom]:
    """A started Postroom on the configured database, closed afterwards."""
    from postroom.app import Postroom

    postroom = Postroom(settings or settings_or_exit())
    try:
        await postroom.start()
        yield postroom
    finally:
        await postroom.aclose()


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop (a dependency: a faster loop for the API and the
    workers), or on the standard loop where uvloop is not available (Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed wherever it builds
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run(coro_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; turn every error into one line and an exit status."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from postroom.errors import PostroomError, RequestInvalid

        try:
            return run_loop(coro_fn(*args, **kwargs))
        except RequestInvalid as exc:
            for err in exc.errors:
                typer.secho(f"Error: {err['field']}: {err['message']}", err=True, fg="red")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            message = describe(exc)
            if message is None:
                raise
            code = exc.exit_code if isinstance(exc, PostroomError) else 1
            raise fail(message, code) from None

    return wrapper


def describe(exc: BaseException) -> str | None:
    """One line for the errors an operator can cause and fix; None for real bugs."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from postroom.errors import PostroomError

    if isinstance(exc, PostroomError):
        return exc.message
    if isinstance(exc, DBAPIError):
        # the driver's own words: "database "x" does not exist", "role "y" does not exist"
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return f"database error: {detail}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0]}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError):
        return f"cannot reach the database: {exc.strerror or exc}"
    return None


def configure_logging(settings: Settings, log_format: str | None = None) -> None:
    from postroom import logs

    fmt = log_format or settings.log_format
    logs.configure(settings.log_level, "json" if fmt == "json" else "text")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def when(value: Any) -> str:
    """A timestamp for tables: ``2026-11-30 04:52`` (UTC), or ``-``."""
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


def new_typer(help_text: str) -> typer.Typer:
    """A command group with plain help (no rich rendering: it is slow to import and
    prints Python types such as ``<list[str]>`` instead of our metavars)."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
