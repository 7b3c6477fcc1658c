"""A Django email backend that sends through Postroom (``pip install postroom[django]``).

::

    EMAIL_BACKEND = "postroom.contrib.django.EmailBackend"
    POSTROOM = {"URL": "http://localhost:8025", "API_KEY": "pr_..."}
    # or, to enqueue straight into Postroom's database from this process:
    POSTROOM = {"IN_PROCESS": True, "SETTINGS": {"database_url": "postgresql://..."}}

Each ``EmailMessage`` goes out as the MIME Django builds (``message.message()``),
through ``POST /send/raw``: attachments, alternatives, Cc, Reply-To and extra
headers arrive exactly as Django wrote them, and the envelope is Django's
``recipients()``, so Bcc addresses are delivered without appearing in any header.
``send_messages`` returns how many messages Postroom accepted; with
``fail_silently`` a refused or failed message is skipped, otherwise its error is
raised. A missing configuration is always raised (``ImproperlyConfigured``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend

from postroom.client import PostroomClient, RetryPolicy
from postroom.errors import PostroomError


def _envelope(recipients: Sequence[str]) -> list[str]:
    """Django's recipients may be ``Name <addr>``; the envelope takes the address."""
    return [parseaddr(r)[1] or r for r in recipients]


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Sends Django mail through Postroom's API, or in-process into its queue."""

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        in_process: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        options: dict[str, Any] = dict(getattr(settings, "POSTROOM", {}) or {})
        self.in_process = bool(options.get("IN_PROCESS") if in_process is None else in_process)
        self.url = url or options.get("URL")
        self.api_key = api_key or options.get("API_KEY")
        self.timeout = float(timeout or options.get("TIMEOUT") or 30.0)
        self.retries = int(options.get("RETRIES", 4))
        self.postroom_settings: dict[str, Any] = dict(options.get("SETTINGS") or {})
        if not self.in_process and not (self.url and self.api_key):
            raise ImproperlyConfigured(
                "Postroom needs POSTROOM = {'URL': ..., 'API_KEY': ...} "
                "(or {'IN_PROCESS': True}) in the Django settings"
            )
        self._client: PostroomClient | None = None

    def open(self) -> bool:
        """Open the HTTP connection pool; True when this call opened it."""
        if self.in_process or self._client is not None:
            return False
        self._client = PostroomClient(
            self.url or "",
            self.api_key or "",
            timeout_s=self.timeout,
            retry=RetryPolicy(attempts=max(1, self.retries)),
        )
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send each message; the number Postroom accepted."""
        messages = [m for m in email_messages if m.recipients()]
        if not messages:
            return 0
        if self.in_process:
            return self._send_in_process(messages)
        opened = self.open()
        sent = 0
        try:
            for message in messages:
                try:
                    self._post(message)
                except Exception:
                    if not self.fail_silently:
                        raise
                else:
                    sent += 1
        finally:
            if opened:
                self.close()
        return sent

    def _post(self, message: Any) -> None:
        assert self._client is not None
        self._client.send_raw(
            message.message().as_bytes(linesep="\r\n"),
            to=_envelope(message.recipients()),
            from_=parseaddr(message.from_email)[1] or None,
        )

    def _send_in_process(self, messages: Sequence[Any]) -> int:
        """Enqueue through the ``Postroom`` facade, on a loop of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._enqueue(messages))
        # called from async code (an async view): keep that loop free
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._enqueue(messages)).result()

    async def _enqueue(self, messages: Sequence[Any]) -> int:
        from postroom.app import Postroom
        from postroom.config import load_settings
        from postroom.services.raw_sending import RawEnvelope

        try:
            postroom = Postroom(load_settings(**self.postroom_settings))
            await postroom.start()
        except PostroomError as exc:
            raise ImproperlyConfigured(f"Postroom cannot start: {exc}") from exc
        sent = 0
        try:
            for message in messages:
                envelope = RawEnvelope(
                    mail_from=parseaddr(message.from_email)[1] or None,
                    recipients=_envelope(message.recipients()),
                    source="django",
                )
                try:
                    await postroom.send_raw(message.message().as_bytes(linesep="\r\n"), envelope)
                except Exception:
                    if not self.fail_silently:
                        raise
                else:
                    sent += 1
        finally:
            await postroom.aclose()
        return sent
