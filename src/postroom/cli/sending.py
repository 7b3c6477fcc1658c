"""``postroom send`` and ``postroom status``: one email in, one email's story out."""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path
from typing import Annotated, Any

import typer

from postroom.cli.common import fail, run, started, table

AddrList = Annotated[list[str] | None, typer.Option(metavar="ADDR", help="Recipient (repeatable).")]


def _address(raw: str) -> dict[str, str]:
    from email.utils import parseaddr

    name, address = parseaddr(raw)
    return {"email": address or raw, **({"name": name} if name else {})}


def _attachment(path: str) -> dict[str, str]:
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise fail(f"--attach {path}: {exc.strerror or exc}", 2) from None
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return {
        "filename": file.name,
        "content": base64.b64encode(data).decode("ascii"),
        "contentType": content_type,
    }


@run
async def send(
    to: Annotated[list[str], typer.Option("--to", metavar="ADDR", help="Recipient (repeatable).")],
    subject: Annotated[str, typer.Option(metavar="TEXT", help="Subject line.")],
    text: Annotated[str | None, typer.Option(metavar="TEXT", help="Plain-text body.")] = None,
    html: Annotated[str | None, typer.Option(metavar="HTML", help="HTML body.")] = None,
    sender: Annotated[
        str | None,
        typer.Option("--from", metavar="ADDR", help="Sender; defaults to POSTROOM_DEFAULT_FROM."),
    ] = None,
    cc: Annotated[
        list[str] | None, typer.Option(metavar="ADDR", help="Cc recipient (repeatable).")
    ] = None,
    bcc: Annotated[
        list[str] | None, typer.Option(metavar="ADDR", help="Bcc recipient (repeatable).")
    ] = None,
    reply_to: Annotated[
        str | None, typer.Option("--reply-to", metavar="ADDR", help="Reply-To address.")
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH", help="Attach a file (repeatable); type from its name."),
    ] = None,
    email_type: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="transactional, marketing, system or notification (picks the queue).",
        ),
    ] = "transactional",
    priority: Annotated[
        int | None,
        typer.Option(min=1, max=5, metavar="1-5", help="5 is most urgent; default: the queue's."),
    ] = None,
    scheduled_at: Annotated[
        str | None,
        typer.Option(
            "--scheduled-at", metavar="TIME", help="Send later: ISO 8601 with a time zone."
        ),
    ] = None,
    queue: Annotated[
        str | None, typer.Option(metavar="QUEUE", help="Put it on this queue (name or id).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(metavar="PROVIDER", help="Send only through this provider (name or id)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print the id alone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON result.")] = False,
) -> None:
    """Queue one email through the same path as the API; prints its id and queue."""
    request: dict[str, Any] = {
        "to": [{**_address(r), "type": "to"} for r in to]
        + [{**_address(r), "type": "cc"} for r in cc or ()]
        + [{**_address(r), "type": "bcc"} for r in bcc or ()],
        "subject": subject,
        "content": {k: v for k, v in (("text", text), ("html", html)) if v is not None},
        "type": email_type,
        "source": "cli",
    }
    optional = {
        "from": _address(sender) if sender else None,
        "replyTo": _address(reply_to) if reply_to else None,
        "attachments": [_attachment(p) for p in attach] if attach else None,
        "priority": priority,
        "scheduledAt": scheduled_at,
        "queue": queue,
        "provider": provider,
    }
    request.update({k: v for k, v in optional.items() if v is not None})
    async with started() as postroom:
        result = await postroom.send(request)
        ref = await postroom.queues.get(result.queue_id) if result.queue_id else None
    if as_json:
        typer.echo(json.dumps(result.dump(), indent=2))
    elif quiet:
        typer.echo(result.id)
    else:
        where = ref.name if ref else result.queue_id
        later = result.scheduled_at and result.scheduled_at > result.created_at
        when = f", due {result.scheduled_at:%Y-%m-%d %H:%M:%S %Z}" if later else ""
        n = result.recipients
        typer.echo(f"Queued {result.id} on queue {where} for {n} recipient{'s' * (n != 1)}{when}.")


@run
async def status(
    email_id: Annotated[str, typer.Argument(metavar="ID", hidden=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Show an email's status, its recipients and every delivery attempt (ID: the email's id
    or a recipient record's)."""
    async with started() as postroom:
        found = await postroom.status(email_id)
    if as_json:
        typer.echo(json.dumps(found.dump(), indent=2))
        return
    typer.echo(f"{found.id}  {found.status}  {found.subject!r}")
    typer.echo(f"attempts {found.attempts}/{found.max_attempts}, provider {found.provider or '-'}")
    if found.error:
        typer.echo(f"last error: {found.error.get('code')}: {found.error.get('message')}")
    rows = [("RECIPIENT", "TYPE", "STATUS", "MESSAGE-ID")]
    rows += [(r.email, r.type, r.status, r.message_id or "-") for r in found.recipients]
    typer.echo(table(rows))
    if found.attempt_log:
        log_rows = [("#", "FINISHED", "PROVIDER", "OUTCOME", "ERROR")]
        log_rows += [
            (
                str(a.attempt),
                f"{a.finished_at:%Y-%m-%d %H:%M:%S}",
                a.provider or "-",
                a.outcome,
                f"{a.error_code}: {a.error}"[:80] if a.error_code else "",
            )
            for a in found.attempt_log
        ]
        typer.echo(table(log_rows))
