"""Bounce classes: why a message bounced, and whether the address is dead.

Only an unknown mailbox or domain is a *hard* bounce (the address is suppressed
at once). A full mailbox, a policy or reputation block (``550 5.7.1 … listed``)
or throttling says nothing about the address: those are *soft* bounces (so is an
unexplained failure), which
suppress only after several in a row. The enhanced status code (RFC 3463) decides
first, the reply text second, the basic code last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC = re.compile(r"^\s*([245]\d\d)\b")

_TEXT_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "reputation-block",
        re.compile(
            r"reputation|block ?list|black ?list|spamhaus|spamcop|\brbl\b|\bdnsbl\b|"
            r"listed (at|on|in)|poor sender|ip .*blocked|sender score",
            re.I,
        ),
    ),
    ("throttled", re.compile(r"rate limit|too many|throttl|try again later|slow down", re.I)),
    (
        "mailbox-full",
        re.compile(r"quota|mailbox (is )?full|over ?quota|insufficient (system )?storage", re.I),
    ),
    (
        "invalid-mailbox",
        re.compile(
            r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
            r"recipient (address )?rejected|invalid (recipient|mailbox)|"
            r"mailbox (unavailable|not found)|address rejected|not a valid mailbox|"
            r"account (has been )?disabled|unrouteable address",
            re.I,
        ),
    ),
    ("spam-content", re.compile(r"spam|content (rejected|policy)|message rejected as", re.I)),
    ("policy-block", re.compile(r"policy|not (authorized|permitted)|denied|dmarc|spf|dkim", re.I)),
)
#: classes that prove the address is bad
HARD_CLASSES = frozenset({"invalid-mailbox", "invalid-domain"})


@dataclass(frozen=True, slots=True)
class Bounce:
    bounce_type: str  #: hard | soft
    reason_class: str
    status: str | None  #: the enhanced status code, e.g. 5.1.1
    code: int | None

    def data(self, diagnostic: str | None) -> dict[str, str | int]:
        out: dict[str, str | int] = {"bounceType": self.bounce_type, "reason": self.reason_class}
        if self.status:
            out["status"] = self.status
        if self.code:
            out["code"] = self.code
        if diagnostic:
            out["description"] = diagnostic[:1000]
        return out


def _by_status(cls: str, subject: str, detail: str) -> str | None:
    if subject == "1":
        return "invalid-domain" if detail in ("2", "10") else "invalid-mailbox"
    if subject == "2":
        return "mailbox-full" if detail in ("2", "3") else "policy-block"
    if subject == "4":
        return "invalid-domain" if detail in ("4",) else "network"
    if subject == "7":
        return "policy-block"
    if cls == "4" and subject in ("3", "4"):
        return "network"
    return None


def classify(
    diagnostic: str | None, *, status: str | None = None, code: int | None = None
) -> Bounce:
    """Classify a rejection from its enhanced ``status``, reply text and basic ``code``."""
    text = diagnostic or ""
    if status is None and (m := _ENHANCED.search(text)):
        status = ".".join(m.groups())
    if code is None and (m := _BASIC.match(text)):
        code = int(m.group(1))
    reason: str | None = None
    by_text = next((name for name, rx in _TEXT_CLASSES if rx.search(text)), None)
    if status:
        cls, subject, detail = status.split(".")
        reason = _by_status(cls, subject, detail)
        if subject == "7" and by_text in ("reputation-block", "spam-content", "throttled"):
            reason = by_text  # 5.7.1 covers blocks of every kind: the text says which
        if cls == "4" and subject == "7":
            reason = by_text if by_text in ("reputation-block", "throttled") else "throttled"
    if reason is None:
        reason = by_text or "other"
    temporary = (status or "").startswith("4") or (code is not None and 400 <= code < 500)
    hard = reason in HARD_CLASSES and not temporary
    return Bounce("hard" if hard else "soft", reason, status, code)
