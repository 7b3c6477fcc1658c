"""``postroom config``: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from postroom.cli.common import settings_or_exit, table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from postroom.config import Settings

ENV_PREFIX = "POSTROOM_"


def _shown(name: str, value: Any, settings: Settings) -> Any:
    """A setting's value as safe to print: no secret, no database password."""
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return "****" if value.get_secret_value() else ""
    if name == "secret_key" and value is None:
        return f"(generated: {settings.data_dir / 'secret.key'})"
    if name == "database_url":
        from sqlalchemy.engine import make_url

        return make_url(settings.effective_database_url).render_as_string(hide_password=True)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def effective(settings: Settings) -> list[tuple[str, Any, str]]:
    """``(variable, value, source)`` for every setting, nested ones flattened."""
    out: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: str, nested_env: bool) -> None:
        from pydantic import BaseModel

        for name in type(model).model_fields:
            value = getattr(model, name)
            var = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(value, var + "__", nested_env or var in os.environ)
                continue
            if var in os.environ or nested_env:
                source = "environment"
            elif name in model.model_fields_set:
                source = "config file"
            else:
                source = "default"
            out.append((var, _shown(name, value, settings), source))

    walk(settings, ENV_PREFIX, False)
    return out


def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show the effective settings (environment, then postroom.toml, then defaults)."""
    settings = settings_or_exit()
    rows = effective(settings)
    if as_json:
        typer.echo(json.dumps({var: value for var, value, _ in rows}, indent=2, default=str))
        return
    from postroom.config import DEFAULT_CONFIG_FILE

    config_file = os.environ.get("POSTROOM_CONFIG", DEFAULT_CONFIG_FILE)
    header = [("SETTING", "VALUE", "FROM")]
    typer.echo(table(header + [(var, str(value), src) for var, value, src in rows]))
    typer.echo(f"Config file: {config_file}" + ("" if os.path.isfile(config_file) else " (absent)"))
