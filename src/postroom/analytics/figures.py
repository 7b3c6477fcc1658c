"""The figures counted per message recipient, and the rates derived from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

#: the counted figures, in report column order
FIGURES = (
    "sent",
    "delivered",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
    "failed",
    "human_opened",
    "human_clicked",
)

#: the figures as the API and reports name them (camelCase)
FIGURE_NAMES = tuple(
    f.split("_")[0] + "".join(w.title() for w in f.split("_")[1:]) for f in FIGURES
)

#: rate name -> (numerator, denominator); a zero denominator gives 0
RATES = {
    "deliveryRate": ("delivered", "sent"),
    "openRate": ("opened", "delivered"),
    "clickRate": ("clicked", "opened"),
    "bounceRate": ("bounced", "sent"),
    "complaintRate": ("complained", "delivered"),
    "unsubscribeRate": ("unsubscribed", "delivered"),
    "humanOpenRate": ("human_opened", "delivered"),
    "humanClickRate": ("human_clicked", "human_opened"),
}


class Counts:
    """The figures of one group (a hot path: thousands are summed per request)."""

    __slots__ = FIGURES

    def __init__(
        self,
        sent: int = 0,
        delivered: int = 0,
        bounced: int = 0,
        complained: int = 0,
        opened: int = 0,
        clicked: int = 0,
        unsubscribed: int = 0,
        failed: int = 0,
        human_opened: int = 0,
        human_clicked: int = 0,
    ) -> None:
        self.sent = sent
        self.delivered = delivered
        self.bounced = bounced
        self.complained = complained
        self.opened = opened
        self.clicked = clicked
        self.unsubscribed = unsubscribed
        self.failed = failed
        self.human_opened = human_opened
        self.human_clicked = human_clicked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counts) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Counts({self.as_dict()})"

    def add(self, o: Counts) -> None:
        self.sent += o.sent
        self.delivered += o.delivered
        self.bounced += o.bounced
        self.complained += o.complained
        self.opened += o.opened
        self.clicked += o.clicked
        self.unsubscribed += o.unsubscribed
        self.failed += o.failed
        self.human_opened += o.human_opened
        self.human_clicked += o.human_clicked

    def bump(self, figure: str, n: int) -> None:
        setattr(self, figure, getattr(self, figure) + n)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIGURES}

    def rates(self) -> dict[str, float]:
        out = {}
        for rate, (num, den) in RATES.items():
            d = getattr(self, den)
            out[rate] = round(getattr(self, num) / d, 6) if d else 0.0
        return out


#: the dimensions of a group, in ``Key`` order
DIMS = ("bucket", "provider_id", "queue_id", "type", "tag", "template_id")


class Key(NamedTuple):
    """One group: a period (None when not split by time) and the dimensions (a named
    tuple: thousands are made per request, a frozen dataclass costs several times as
    much to build)."""

    bucket: datetime | None
    provider_id: uuid.UUID | None
    queue_id: uuid.UUID | None
    type: str | None
    tag: str | None
    template_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Filters:
    provider_id: uuid.UUID | None = None
    queue_id: uuid.UUID | None = None
    type: str | None = None
    tag: str | None = None
    template_id: uuid.UUID | None = None


@dataclass
class Table:
    """Counts per group, summed as rows arrive from the live tables and rollups."""

    groups: dict[Key, Counts] = field(default_factory=dict)

    def bump(self, key: Key, figure: str, n: int) -> None:
        self.groups.setdefault(key, Counts()).bump(figure, n)

    def merge(self, other: Table) -> None:
        for key, counts in other.groups.items():
            self.groups.setdefault(key, Counts()).add(counts)

    def project(self, dims: frozenset[str]) -> Table:
        """The same figures grouped by ``dims`` only (the other parts of keys None)."""
        kept = [i for i, d in enumerate(DIMS) if d in dims]
        sums: dict[tuple[Any, ...], Counts] = {}
        for key, counts in self.groups.items():
            part = tuple([key[i] for i in kept])
            into = sums.get(part)
            if into is None:
                sums[part] = into = Counts()
            into.add(counts)
        out = Table()
        for part, counts in sums.items():  # a key per group of the projection only
            full: list[Any] = [None] * len(DIMS)
            for i, v in zip(kept, part, strict=True):
                full[i] = v
            out.groups[Key._make(full)] = counts
        return out

    def total(self) -> Counts:
        out = Counts()
        for counts in self.groups.values():
            out.add(counts)
        return out
