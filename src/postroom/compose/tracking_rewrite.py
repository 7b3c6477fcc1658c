"""Open and click tracking in the HTML part: links rewritten, a pixel added.

Each ``<a href>`` with an http(s) URL becomes a signed click link bound to that
exact URL. Left alone: ``mailto:``, ``tel:`` and other schemes, anchors
(``#top``), unsubscribe links (the URL or the tag says "unsubscribe") and links
marked ``data-postroom-notrack``. The pixel goes before ``</body>`` (or at the end).
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postroom.tracking.context import CLICK_PATH, PIXEL_PATH, TrackingContext, primary_recipient

_ANCHOR = re.compile(r"<a\b[^>]*>", re.I | re.S)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.I | re.S)
_BODY_END = re.compile(r"</body\s*>", re.I)


def _skip(tag: str, url: str) -> bool:
    lowered = url.strip().lower()
    if not lowered.startswith(("http://", "https://")):
        return True  # mailto:, tel:, #anchors, relative and template links
    return (
        "unsubscribe" in lowered
        or "unsubscribe" in tag.lower()
        or "data-postroom-notrack" in tag.lower()
    )


def rewrite(
    html: str, email_id: str, request: Mapping[str, Any], ctx: TrackingContext, now: datetime
) -> str:
    """``html`` with tracked links and/or the pixel, as the request and defaults ask."""
    recipient = primary_recipient(request)
    base: dict[str, Any] = {"e": email_id, "r": recipient}
    if ctx.wants(request, "clicks"):

        def one_tag(tag_match: re.Match[str]) -> str:
            tag = tag_match.group(0)
            href = _HREF.search(tag)
            if href is None:
                return tag
            raw = href.group(2) if href.group(2) is not None else href.group(3)
            url = htmllib.unescape(raw).strip()
            if _skip(tag, url):
                return tag
            tracked = ctx.link(CLICK_PATH, "c", {**base, "u": url}, now)
            return (
                tag[: href.start()]
                + f'{href.group(1)}"{htmllib.escape(tracked)}"'
                + tag[href.end() :]
            )

        html = _ANCHOR.sub(one_tag, html)
    if ctx.wants(request, "opens"):
        pixel_url = htmllib.escape(ctx.link(PIXEL_PATH, "o", base, now) + ".gif")
        pixel = (
            f'<img src="{pixel_url}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        matches = list(_BODY_END.finditer(html))
        if matches:
            at = matches[-1].start()
            html = html[:at] + pixel + html[at:]
        else:
            html += pixel
    return html
