"""Opens and clicks that no person made: privacy proxies, prefetchers, link scanners.

They are recorded with ``machine: true`` and a reason, never dropped, and do not
count as human opens or clicks nor move the status.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

#: image proxies that fetch every image when mail arrives or is listed
_OPEN_AGENTS = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|Apple-?Mail-?Privacy|"
    r"Mozilla/5\.0$|^$",  # Apple MPP fetches with a bare "Mozilla/5.0"
    re.I,
)
#: security gateways and bots that follow links to scan them
_SCANNER_AGENTS = re.compile(
    r"bot\b|crawler|spider|python-requests|python-urllib|curl/|wget/|go-http-client|"
    r"java/|okhttp|barracuda|proofpoint|mimecast|symantec|trend ?micro|fortiguard|"
    r"sophos|urldefense|safelinks|bingpreview|microsoft office existence|"
    r"headlesschrome|phantomjs|slackbot|facebookexternalhit",
    re.I,
)
#: a click this soon after sending was made by a scanner on delivery
SCANNER_WINDOW_S = 10.0
#: several links of one message clicked within this many seconds: a scanner
BURST_WINDOW_S = 2.0


#: distinct user agents whose verdict is remembered (mail clients and proxies send
#: few distinct ones), and the longest remembered: the cache stays small
_AGENT_CACHE, _AGENT_MAX = 4096, 512


@functools.lru_cache(maxsize=_AGENT_CACHE)
def _agent_verdicts(user_agent: str) -> tuple[bool, bool]:
    """(a privacy proxy's agent, a scanner's agent): the regexes once per agent."""
    return (
        _OPEN_AGENTS.search(user_agent.strip()) is not None,
        not user_agent.strip() or _SCANNER_AGENTS.search(user_agent) is not None,
    )


def _verdicts(user_agent: str) -> tuple[bool, bool]:
    if len(user_agent) > _AGENT_MAX:
        return _agent_verdicts.__wrapped__(user_agent)
    return _agent_verdicts(user_agent)


def _prefetch(headers: Mapping[str, str]) -> bool:
    purpose = headers.get("purpose") or headers.get("sec-purpose") or headers.get("x-moz") or ""
    return "prefetch" in purpose.lower()


def open_by_request(user_agent: str, headers: Mapping[str, str]) -> str | None:
    """Why an open was made by a machine, as far as the request alone tells."""
    if _prefetch(headers):
        return "prefetch"
    if _verdicts(user_agent)[0]:
        return "privacy-proxy"
    return None


def open_by_timing(seconds_since_sent: float | None) -> str | None:
    """The rest of :func:`machine_open`: what the record's sending time tells."""
    if seconds_since_sent is not None and seconds_since_sent < 1.0:
        return "on-delivery"
    return None


def machine_open(
    user_agent: str, headers: Mapping[str, str], seconds_since_sent: float | None
) -> str | None:
    """Why an open was made by a machine, or None for a person."""
    return open_by_request(user_agent, headers) or open_by_timing(seconds_since_sent)


def click_by_request(user_agent: str, method: str, headers: Mapping[str, str]) -> str | None:
    """Why a click was made by a scanner, as far as the request alone tells."""
    if method.upper() == "HEAD":
        return "head-request"
    if _prefetch(headers):
        return "prefetch"
    if _verdicts(user_agent)[1]:
        return "scanner-agent"
    return None


def click_by_timing(seconds_since_sent: float | None, other_links_just_clicked: int) -> str | None:
    """The rest of :func:`scanner_click`: what the sending time and other clicks tell."""
    if seconds_since_sent is not None and seconds_since_sent < SCANNER_WINDOW_S:
        return "on-delivery"
    if other_links_just_clicked:
        return "all-links"
    return None


def scanner_click(
    user_agent: str,
    method: str,
    headers: Mapping[str, str],
    seconds_since_sent: float | None,
    other_links_just_clicked: int,
) -> str | None:
    """Why a click was made by a scanner, or None for a person."""
    return click_by_request(user_agent, method, headers) or click_by_timing(
        seconds_since_sent, other_links_just_clicked
    )
