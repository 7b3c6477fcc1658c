"""RFC 8058 one-click unsubscribe headers for marketing mail.

Marketing mail gets ``List-Unsubscribe: <https://…/t/u/<token>>`` (plus a
``mailto:`` when ``POSTROOM_UNSUBSCRIBE_MAILTO`` is set) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. A ``List-Unsubscribe``
the request sets itself wins: Postroom then adds neither header, since
``List-Unsubscribe-Post`` must only accompany a URL that honours a one-click POST.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postroom.tracking.context import UNSUBSCRIBE_PATH, TrackingContext, primary_recipient
from postroom.types import EmailType


def headers(
    email_id: str,
    request: Mapping[str, Any],
    existing: Mapping[str, str],
    ctx: TrackingContext,
    now: datetime,
) -> dict[str, str]:
    """The headers to add (none for non-marketing mail or a user-set List-Unsubscribe)."""
    if request.get("type") != EmailType.MARKETING:
        return {}
    if any(name.lower() == "list-unsubscribe" for name in existing):
        return {}
    payload = {"e": email_id, "r": primary_recipient(request)}
    targets = [f"<{ctx.link(UNSUBSCRIBE_PATH, 'u', payload, now)}>"]
    if ctx.unsubscribe_mailto:
        targets.append(f"<mailto:{ctx.unsubscribe_mailto}?subject=unsubscribe%20{email_id}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
