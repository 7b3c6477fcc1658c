"""Log output for a running Postroom: one line per event, as text or as JSON.

Operators read the text form; log shippers read ``json``, one object per line with
``time``, ``level``, ``logger``, ``message`` and the record's structured fields
(``method``, ``path``, ``status``, ``duration_ms``, ``key``, ``email_id``, ``provider``,
``result``, ...), so nobody has to parse the message text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from postroom.queue.jobs import Result

LogFormat = Literal["text", "json"]

#: attributes every LogRecord has; anything else was passed with ``extra=`` and is data
#: (except uvicorn's ``color_message``: the same message with terminal colours)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a structured record (a helper, so call sites read as data)."""
    return values


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Send Postroom's logs to stderr at ``level`` in ``fmt``; replaces earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # alembic's plugin and "Context impl" lines on every start are noise
    logging.getLogger("alembic").setLevel(logging.WARNING)


def delivery(logger: logging.Logger, result: Result) -> None:
    """One INFO line per delivery outcome: email id, provider, result, duration, error."""
    if not logger.isEnabledFor(logging.INFO):
        return
    ms = result.duration_ms
    duration = None if ms is None else round(ms, 1)
    error = f" {result.error_code}: {result.error_message}" if result.error_code else ""
    logger.info(
        "email %s %s via %s in %s ms%s",
        result.job.id,
        result.outcome,
        result.provider_name or "-",
        "-" if duration is None else f"{duration:.0f}",
        error,
        extra=fields(
            email_id=str(result.job.id),
            provider=result.provider_name,
            result=result.outcome,
            duration_ms=duration,
            attempt=result.job.attempts,
            error_code=result.error_code,
        ),
    )
