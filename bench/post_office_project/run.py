"""django-post_office as a peer for ``bench/throughput.py --peers``.

Runs in its own environment (``bench/.venv`` with Django and django-post_office)::

    bench/.venv/bin/python bench/post_office_project/run.py --db DB --port P migrate
    bench/.venv/bin/python bench/post_office_project/run.py --db DB --port P \\
        enqueue --messages N --content fields.json
    bench/.venv/bin/python bench/post_office_project/run.py --db DB --port P \\
        send --processes 2 --lockfile PATH

``enqueue`` queues N mails with ``mail.send(..., priority="medium")``, one
transaction each; ``send`` times ``send_queued_mail --processes 2`` (BATCH_SIZE
1000, see settings.py). Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def setup(db: Path, port: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "post_office_project.settings"
    os.environ["POST_OFFICE_BENCH_DB"] = str(db)
    os.environ["POST_OFFICE_BENCH_PORT"] = str(port)
    import django

    django.setup()


def migrate() -> dict[str, Any]:
    from django.core.management import call_command

    start = time.perf_counter()
    call_command("migrate", verbosity=0)
    return {"seconds": time.perf_counter() - start}


def enqueue(messages: int, content: Path) -> dict[str, Any]:
    from post_office import mail

    fields = json.loads(content.read_text())
    sender = f'"{fields["from"]["name"]}" <{fields["from"]["email"]}>'
    start = time.perf_counter()
    last = start
    for i in range(messages):
        mail.send(
            [f"{fields['recipientPrefix']}{i}@{fields['recipientDomain']}"],
            sender,
            subject=f"{fields['subjectPrefix']}{i:06d}{fields['subjectSuffix']}",
            message=fields["text"],
            html_message=fields["html"],
            priority="medium",
        )
        if time.perf_counter() - last >= 2.0:
            last = time.perf_counter()
            print(f"  post_office: {i + 1}/{messages} enqueued", file=sys.stderr, flush=True)
    return {"enqueued": messages, "seconds": time.perf_counter() - start}


def send_many(messages: int) -> dict[str, Any]:
    """``mail.send_many``: post_office's bulk enqueue (one bulk_create)."""
    from post_office import mail

    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    mail.send_many(
        [
            {
                "recipients": [f"customer{i}@example.net"],
                "sender": "orders@shop.example.com",
                "subject": f"Order {100000 + i} has shipped",
                "message": f"Hello Customer {i}",
                "html_message": f"<p>Hello Customer {i}</p>",
                "priority": "medium",
            }
            for i in range(messages)
        ]
    )
    seconds = time.perf_counter() - start
    return {"enqueued": messages, "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu_before}


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def send(processes: int, lockfile: Path) -> dict[str, Any]:
    from django.core.management import call_command
    from post_office.models import STATUS, Email

    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    call_command("send_queued_mail", processes=processes, lockfile=str(lockfile))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        # this process and the sending processes it forked (reaped when the pool closed)
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "sent": Email.objects.filter(status=STATUS.sent).count(),
        "failed": Email.objects.filter(status=STATUS.failed).count(),
        "queued": Email.objects.filter(status=STATUS.queued).count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="django-post_office benchmark steps")
    parser.add_argument("--db", type=Path, required=True, help="SQLite database file")
    parser.add_argument("--port", type=int, required=True, help="the sink's port on 127.0.0.1")
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("migrate")
    enq = sub.add_parser("enqueue")
    enq.add_argument("--messages", type=int, required=True)
    enq.add_argument("--content", type=Path, required=True, help="message fields (JSON)")
    many = sub.add_parser("send-many")
    many.add_argument("--messages", type=int, required=True)
    snd = sub.add_parser("send")
    snd.add_argument("--processes", type=int, default=2)
    snd.add_argument("--lockfile", type=Path, required=True)
    args = parser.parse_args()
    setup(args.db, args.port)
    if args.step == "migrate":
        result = migrate()
    elif args.step == "enqueue":
        result = enqueue(args.messages, args.content)
    elif args.step == "send-many":
        result = send_many(args.messages)
    else:
        result = send(args.processes, args.lockfile)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
