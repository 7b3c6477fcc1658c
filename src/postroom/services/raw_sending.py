"""Raw MIME sending: SMTP submissions and ``POST /send/raw`` enter the queue here.

The same guarantees as ``Sender.send``: the job and one record per envelope
recipient commit together (through the same group-commit batcher) before this
returns, so the relay answers ``250`` and the API ``202`` only for durable mail.
Suppressed envelope recipients are marked ``suppressed`` and left out of the
envelope in that commit (one query per batch: see ``services.batching``).
The same edge checks apply where they make sense for finished MIME: every
envelope address is a valid address without control characters, the message is
within ``max_message_bytes``, and a message has at most ``MAX_RECIPIENTS``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from postroom.compose import raw as raw_mime
from postroom.compose.message import message_id_for
from postroom.errors import MessageError
from postroom.queue import store
from postroom.schemas.email import valid_address
from postroom.schemas.results import EmailSendResult
from postroom.services.sending import Sender, scope_idempotency_key
from postroom.types import EmailType, RecipientType

#: envelope recipients of one message: the API's limit for ``to``
MAX_RECIPIENTS = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class RawEnvelope:
    """Who a raw message goes to, and on whose behalf it was submitted."""

    #: MAIL FROM; ``None`` or empty: the From field's address
    mail_from: str | None = None
    #: RCPT TO; ``None``: the addresses of the To, Cc and Bcc fields
    recipients: Sequence[str] | None = None
    #: ``smtp``, ``api``, ...; kept in the job's metadata
    source: str = "api"
    #: who submitted it (API key prefix, client address), for the job's metadata
    submitted_by: str | None = None
    queue: str | None = None
    type: EmailType = EmailType.TRANSACTIONAL


@functools.lru_cache(maxsize=4096)
def _checked(value: str) -> str | ValueError:
    """``valid_address``, cached: a relay sees the same few addresses over and over."""
    try:
        return valid_address(value)
    except ValueError as exc:
        return exc


def envelope_address(value: str) -> str | None:
    """The normalized address, or None when it is not a valid envelope address."""
    checked = _checked(value)
    return None if isinstance(checked, ValueError) else checked


def _address(value: str, field: str) -> str:
    checked = _checked(value)
    if isinstance(checked, ValueError):
        raise MessageError(f"{field}: {checked}", field=field)
    return checked


class RawSender:
    """Accepts finished MIME messages and makes them durable."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    async def send_raw(
        self,
        mime: bytes,
        envelope: RawEnvelope,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> EmailSendResult:
        """Enqueue ``mime`` for ``envelope``; returns once its job and records are committed.

        ``api_key_id`` owns the email and scopes ``idempotency_key``, as for ``Sender.send``.

        Raises:
            MessageError: too large, malformed header block, bad or too many recipients.
        """
        settings, clock = self.sender.settings, self.sender.clock
        if len(mime) > settings.max_message_bytes:
            raise MessageError(
                f"message is {len(mime)} bytes, over the {settings.max_message_bytes}-byte limit"
            )
        fingerprint = _fingerprint(mime, envelope)
        scoped_key = None
        if idempotency_key is not None:
            scoped_key = scope_idempotency_key(idempotency_key, api_key_id)
            if (first := await self.sender.replayed(scoped_key, fingerprint)) is not None:
                return first
        job_id = uuid.uuid4()
        now = clock.now()
        prepared = raw_mime.prepare(
            mime,
            message_id=lambda sender: message_id_for(
                str(job_id), sender, settings.message_id_domain
            ),
            now=now,
        )
        if len(prepared.mime) > settings.max_message_bytes:
            raise MessageError(f"message is over the {settings.max_message_bytes}-byte limit")
        mail_from = _address(envelope.mail_from or prepared.header_from, "from")
        given = envelope.recipients
        if given is None:
            given = [*prepared.to, *prepared.cc, *prepared.bcc]
        if not given:
            raise MessageError("the message has no recipients", field="to")
        if len(given) > MAX_RECIPIENTS:
            raise MessageError(
                f"{len(given)} recipients, over the limit of {MAX_RECIPIENTS}", field="to"
            )
        recipients = list(dict.fromkeys(_address(r, "to") for r in given))
        to_set = {a.lower() for a in prepared.to}
        cc_set = {a.lower() for a in prepared.cc}

        def kind(address: str) -> RecipientType:
            if address.lower() in to_set:
                return RecipientType.TO
            return RecipientType.CC if address.lower() in cc_set else RecipientType.BCC

        route = await self.sender.directory.for_request(envelope.type, envelope.queue)
        queue = route.queue
        to_list = [{"email": r, "type": kind(r).value} for r in recipients]
        data: dict[str, Any] = {
            "raw": {
                "mime": base64.b64encode(prepared.mime).decode("ascii"),
                "mailFrom": mail_from,
                "messageId": prepared.message_id,
            },
            # a summary in the shape of an API request: status, listings and the
            # worker's routing read these fields for raw mail as for API mail
            "request": {
                "from": {"email": prepared.header_from},
                "to": to_list,
                "subject": prepared.subject[:500],
                "type": envelope.type.value,
            },
            "metadata": {"source": envelope.source, "submittedBy": envelope.submitted_by},
        }
        job = store.NewJob(
            id=job_id,
            queue_id=queue.id,
            type=envelope.type.value,
            priority=route.default_priority,
            max_attempts=queue.max_attempts or settings.max_attempts,
            data=data,
            scheduled_at=now,
            created_at=now,
            idempotency_key=scoped_key,
            api_key_id=api_key_id,
            request_hash=fingerprint,
        )
        new_records = [
            store.NewRecord(
                recipient_email=r["email"],
                recipient_type=r["type"],
                recipient_name=None,
                sender_email=mail_from,
                subject=prepared.subject[:500],
                type=envelope.type.value,
                metadata={},
            )
            for r in to_list
        ]
        return await self.sender.commit(job, new_records, fingerprint, screen=True)


def _fingerprint(mime: bytes, envelope: RawEnvelope) -> str:
    """SHA-256 of the message and its envelope: what an Idempotency-Key repeat must match."""
    digest = hashlib.sha256(mime)
    for part in (
        envelope.mail_from or "",
        *(envelope.recipients or ()),
        envelope.queue or "",
        envelope.type.value,
    ):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()
