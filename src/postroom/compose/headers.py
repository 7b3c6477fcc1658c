"""Which extra headers a request may set, and within which limits.

An allow-list, not a deny-list: a header a receiver trusts (``DKIM-Signature``,
``Authentication-Results``, ``Received``, ``ARC-*``, ``Resent-*``, ``Return-Path``,
``Content-*``) or one Postroom writes itself must never come from a client, and
new trace or authentication headers appear every few years. So a request may set
``X-*`` headers (but not Postroom's own ``X-Postroom-*``), ``List-*`` headers and a
short list of standard headers that only describe the message.

Structured headers (message-id lists, mailing-list URLs, keywords) must be ASCII
with no word too long to fold: encoding them as RFC 2047 encoded-words would change
their meaning. Unstructured ones (``X-*``, ``Comments``, ``Organization``,
``Thread-Topic``) may hold any text; the composer encodes it as needed.

The API checks requests with :func:`problems`; the composer checks stored requests
again with it, so a job queued before a rule existed fails with the reason instead
of sending a header the rule forbids.
"""

from __future__ import annotations

import re

#: longest header field name (so that ``Name: `` and a word fit a 78-character line)
MAX_NAME_LENGTH = 76
#: longest header value, in characters
MAX_VALUE_LENGTH = 8000
#: most extra headers on one message
MAX_HEADERS = 100
#: longest run without whitespace in a structured value (a folded line stays under 998 octets)
MAX_WORD_LENGTH = 900

#: RFC 5322 field name: printable ASCII except colon
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")
#: C0 and C1 controls, DEL, and Unicode line/paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LONG_WORD = re.compile(rf"[^ \t]{{{MAX_WORD_LENGTH + 1},}}")
#: RFC 6838 ``type/subtype`` (restricted names of at most 127 characters), no parameters
CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
#: a Content-ID: printable ASCII without spaces or angle brackets (which Postroom adds)
CONTENT_ID = re.compile(r"^[!-;=?-~]{1,250}$")

#: headers Postroom writes itself
RESERVED = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "sender",
    }
)  # fmt: skip
#: Postroom's own X- headers (``X-Postroom-Id``)
RESERVED_PREFIX = "x-postroom-"

#: standard headers a request may set besides ``X-*`` and ``List-*``
ALLOWED_NAMES = (
    "In-Reply-To", "References", "Keywords", "Comments", "Organization", "Precedence",
    "Auto-Submitted", "Importance", "Priority", "Sensitivity", "Feedback-ID",
    "Thread-Topic", "Thread-Index",
)  # fmt: skip
ALLOWED = frozenset(name.lower() for name in ALLOWED_NAMES)
ALLOWED_PREFIXES = ("x-", "list-")
#: allowed headers whose value is free text (RFC 5322 "unstructured")
UNSTRUCTURED = frozenset({"comments", "organization", "thread-topic"})
#: for error messages
ALLOWED_SUMMARY = "X-* (except X-Postroom-*), List-*, " + ", ".join(ALLOWED_NAMES)


def is_unstructured(name: str) -> bool:
    """Whether ``name``'s value is free text that may be RFC 2047-encoded."""
    lowered = name.lower()
    return lowered.startswith("x-") or lowered in UNSTRUCTURED


def name_problem(name: str) -> str | None:
    """Why a request may not set a header called ``name``, or None if it may."""
    if len(name) > MAX_NAME_LENGTH:
        return f"header name {name[:20]!r}… is {len(name)} characters; at most {MAX_NAME_LENGTH}"
    if not _FIELD_NAME.match(name):
        return f"header name {name!r} is not a valid field name (printable ASCII, no colon)"
    lowered = name.lower()
    if lowered in RESERVED or lowered.startswith(RESERVED_PREFIX):
        return f"header {name!r} is set by Postroom and cannot be given"
    if lowered in ALLOWED or lowered.startswith(ALLOWED_PREFIXES):
        return None
    return f"header {name!r} is not allowed; allowed are {ALLOWED_SUMMARY}"


def value_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the value of header ``name``, or None if it can."""
    if _CONTROL.search(value):
        return f"header {name!r} must not contain line breaks or other control characters"
    if len(value) > MAX_VALUE_LENGTH:
        return f"header {name!r} is {len(value)} characters long; at most {MAX_VALUE_LENGTH}"
    if is_unstructured(name):
        return None
    if not value.isascii():
        return f"header {name!r} must be ASCII (encode words per RFC 2047 yourself)"
    if _LONG_WORD.search(value):
        return (
            f"header {name!r} has a run of more than {MAX_WORD_LENGTH} characters "
            "without a space, which cannot be folded"
        )
    return None


def problems(headers: dict[str, str]) -> list[str]:
    """Every reason the extra ``headers`` of a request cannot be sent."""
    found: list[str] = []
    if len(headers) > MAX_HEADERS:
        found.append(f"{len(headers)} headers given; at most {MAX_HEADERS}")
    seen: dict[str, str] = {}
    for name, value in headers.items():
        problem = name_problem(name) or value_problem(name, value)
        if problem:
            found.append(problem)
        elif name.lower() in seen:
            found.append(f"header {name!r} is given twice (also as {seen[name.lower()]!r})")
        seen.setdefault(name.lower(), name)
    return found


def attachment_problems(content_type: str, cid: str | None) -> list[str]:
    """Why an attachment's content type or Content-ID cannot be written, if they cannot."""
    found: list[str] = []
    if not CONTENT_TYPE.match(content_type):
        shown = content_type if len(content_type) <= 40 else content_type[:40] + "…"
        found.append(f"content type {shown!r} is not a valid 'type/subtype' (no parameters)")
    if cid is not None and not CONTENT_ID.match(cid.removeprefix("<").removesuffix(">")):
        found.append(f"cid {cid!r} must be printable ASCII without spaces or angle brackets")
    return found
