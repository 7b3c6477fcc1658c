"""``EmailAnalytics`` (the spec's ``getEmailAnalytics`` result) and its parts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from postroom.schemas.base import PublicModel


class FigureSet(PublicModel):
    """Counts of recipients and the rates derived from them (0 when the denominator is 0).
    ``opened`` and ``clicked`` include opens and clicks machines made (privacy proxies,
    link scanners); ``humanOpened`` and ``humanClicked`` count only people's."""

    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    failed: int = 0
    human_opened: int = 0
    human_clicked: int = 0
    delivery_rate: float = Field(0.0, description="delivered / sent")
    open_rate: float = Field(0.0, description="opened / delivered")
    click_rate: float = Field(0.0, description="clicked / opened")
    bounce_rate: float = Field(0.0, description="bounced / sent")
    complaint_rate: float = Field(0.0, description="complained / delivered")
    unsubscribe_rate: float = Field(0.0, description="unsubscribed / delivered")
    human_open_rate: float = Field(0.0, description="humanOpened / delivered")
    human_click_rate: float = Field(0.0, description="humanClicked / humanOpened")


class AnalyticsSummary(PublicModel):
    """Totals over the window; ``totalOpened`` / ``totalClicked`` and their rates
    include machine-made opens and clicks, the ``human`` ones do not."""

    total_sent: int
    total_delivered: int
    total_bounced: int
    total_complained: int
    total_opened: int
    total_clicked: int
    total_unsubscribed: int
    total_failed: int
    total_human_opened: int
    total_human_clicked: int
    delivery_rate: float
    open_rate: float
    click_rate: float
    bounce_rate: float
    complaint_rate: float
    unsubscribe_rate: float
    human_open_rate: float = Field(description="totalHumanOpened / totalDelivered")
    human_click_rate: float = Field(description="totalHumanClicked / totalHumanOpened")


class ProviderFigures(FigureSet):
    provider_id: str | None = Field(description="None: recipients no provider took")
    name: str | None = None
    type: str | None = None


class QueueFigures(FigureSet):
    queue_id: str | None
    name: str | None = None


class TrendPoint(FigureSet):
    timestamp: datetime = Field(description="Start of the UTC hour or day")


class Performer(FigureSet):
    key: str = Field(description="The tag, type or template id")
    name: str | None = Field(default=None, description="The template's name (templates only)")


class TopPerformers(PublicModel):
    tags: list[Performer] = Field(description="By campaign tag (a message's first tag)")
    types: list[Performer] = Field(description="By message type")
    templates: list[Performer] = Field(
        description="By the template a message was rendered from (``key``: its id)"
    )


class AnalyticsWindow(PublicModel):
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    granularity: Literal["hour", "day"]


class EmailAnalytics(PublicModel):
    window: AnalyticsWindow
    summary: AnalyticsSummary
    providers: list[ProviderFigures]
    queues: list[QueueFigures]
    trends: list[TrendPoint]
    top_performers: TopPerformers
