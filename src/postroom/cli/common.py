"""What every command shares: settings, error rendering, tables."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from postroom.config import Settings, load_settings
from postroom.errors import PostroomError, RequestInvalid

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"invalid configuration: {problems}", 2) from None


def run(coro_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; turn every error into one line and an exit status."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coro_fn(*args, **kwargs))
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


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # alembic's "Context impl" lines on every start are noise; upgrades still show
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
