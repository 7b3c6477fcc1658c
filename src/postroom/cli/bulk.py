"""``postroom send-bulk``: a template and a CSV of recipients in, one email each out."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from postroom.cli.common import fail, run, started

#: CSV columns that describe the recipient; every other column is a template variable
RECIPIENT_COLUMNS = ("email", "name")


def _typed(kind: str, raw: str, where: str) -> Any:
    """A CSV cell as the declared variable type wants it."""
    try:
        match kind:
            case "integer":
                return int(raw)
            case "number":
                return float(raw)
            case "boolean":
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                return raw.lower() in ("true", "1", "yes")
            case "object" | "array":
                return json.loads(raw)
    except ValueError:
        raise fail(f"{where}: {raw!r} is not a valid {kind}", 2) from None
    return raw


def read_recipients(path: Path, types: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of ``path`` as bulk recipients; an empty cell leaves its variable out."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "email" not in reader.fieldnames:
                raise fail(f"{path}: the first row must name the columns, one of them 'email'", 2)
            out = []
            for line, row in enumerate(reader, start=2):
                recipient: dict[str, Any] = {"email": (row.get("email") or "").strip()}
                if row.get("name"):
                    recipient["name"] = row["name"]
                data = {
                    key: _typed(types.get(key, "string"), value, f"{path} line {line}, {key}")
                    for key, value in row.items()
                    if key not in RECIPIENT_COLUMNS and key is not None and value != ""
                }
                # a template that declares "email" or "name" gets the recipient's own
                data |= {
                    k: recipient[k] for k in RECIPIENT_COLUMNS if k in types and k in recipient
                }
                if data:
                    recipient["templateData"] = data
                out.append(recipient)
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}", 2) from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise fail(f"{path}: not a readable UTF-8 CSV file: {exc}", 2) from None
    if not out:
        raise fail(f"{path}: no recipients", 2)
    return out


@run
async def send_bulk(
    template: Annotated[str, typer.Option(metavar="NAME", help="The template (name or id).")],
    csv_file: Annotated[
        Path,
        typer.Option(
            "--csv",
            metavar="FILE",
            help="Recipients: an 'email' column, optional 'name', one column per variable.",
        ),
    ],
    sender: Annotated[
        str | None,
        typer.Option("--from", metavar="ADDR", help="Sender; defaults to POSTROOM_DEFAULT_FROM."),
    ] = None,
    email_type: Annotated[
        str | None,
        typer.Option("--type", metavar="TYPE", help="Default: the template's type."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show a progress bar until every message is sent.")
    ] = False,
) -> None:
    """Queue the template for every row of a CSV file, each with its own data. All rows
    are checked first: one bad row queues nothing and every problem is listed."""
    from email.utils import parseaddr

    async with started() as postroom:
        found = await postroom.sender.templates.get(template)
        types = {v["name"]: v.get("type", "string") for v in found.variables}
        people = read_recipients(csv_file, types)
        request: dict[str, Any] = {"templateId": found.id, "recipients": people}
        if sender:
            name, address = parseaddr(sender)
            request["from"] = {"email": address or sender, **({"name": name} if name else {})}
        if email_type:
            request["type"] = email_type
        accepted = await postroom.send_bulk(request)
        typer.echo(f"Queued bulk {accepted.id}: {accepted.recipients} recipients.")
        if not wait:
            typer.echo(f"Follow it with: postroom send-bulk-status {accepted.id}", err=True)
            return
        with typer.progressbar(length=accepted.recipients, label="Sending", file=sys.stderr) as bar:
            done = 0
            while True:
                progress = await postroom.bulk.progress(accepted.id)
                now_done = progress.total - progress.queued
                bar.update(now_done - done)
                done = now_done
                if progress.queued == 0:
                    break
                await asyncio.sleep(1.0)
    typer.echo(f"Sent {progress.sent}, failed {progress.failed}, suppressed {progress.suppressed}.")


@run
async def bulk_status(
    bulk_id: Annotated[str, typer.Argument(metavar="ID", hidden=True)],
) -> None:
    """Show how far a bulk send is (ID: the id send-bulk printed)."""
    async with started() as postroom:
        p = await postroom.bulk.progress(bulk_id)
    typer.echo(
        f"{p.id}  total {p.total}  queued {p.queued}  sent {p.sent}  failed {p.failed}  "
        f"suppressed {p.suppressed}"
    )
