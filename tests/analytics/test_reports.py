"""``GET /reports``: CSV parsed back against the analytics figures, JSON, filters."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from postroom.analytics.figures import FIGURE_NAMES as FIGURES
from postroom.analytics.figures import RATES
from postroom.analytics.service import providers_t
from postroom.app import Postroom
from tests.analytics.conftest import DAY_A, at
from tests.analytics.seed import Seeder

REPORTS = "/api/system/email/reports"
ANALYTICS = "/api/system/email/analytics"
WINDOW = {"from": "2026-01-08", "to": "2026-01-10"}


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_csv_by_day_parses_back_to_the_analytics_figures(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.get(REPORTS, params=WINDOW)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    header = response.text.splitlines()[0].split(",")
    assert header == ["day", *FIGURES, *RATES]
    rows = parse_csv(response.text)
    # days without figures have no row; the analytics trends agree on the others
    trends = (await client.get(ANALYTICS, params=WINDOW)).json()["trends"]
    expected = [t for t in trends if any(t[f] for f in FIGURES)]
    assert [r["day"] for r in rows] == [t["timestamp"][:10] for t in expected]
    for row, point in zip(rows, expected, strict=True):
        assert {f: int(row[f]) for f in FIGURES} == {f: point[f] for f in FIGURES}
        assert {r: float(row[r]) for r in RATES} == {r: point[r] for r in RATES}
    assert rows[0]["sent"] == "6"
    assert rows[0]["deliveryRate"] == "0.666667"


async def test_grouped_by_provider_and_queue_as_json(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.get(
        REPORTS, params={**WINDOW, "groupBy": "provider,queue", "format": "json"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["groupBy"] == ["provider", "queue"]
    got = {(r["provider"], r["queue"]): (r["sent"], r["failed"]) for r in body["rows"]}
    assert got == {
        (None, "bulk"): (0, 1),
        ("esp", "bulk"): (2, 0),
        ("relay", "transactional"): (6, 0),
    }


async def test_filtered_hourly_report(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    response = await client.get(
        REPORTS,
        params={
            "from": "2026-01-10",
            "to": "2026-01-10",
            "groupBy": "hour,type",
            "type": "marketing",
        },
    )
    assert response.status_code == 200, response.text
    rows = parse_csv(response.text)
    assert [(r["hour"][11:16], r["type"], r["failed"], r["unsubscribed"]) for r in rows] == [
        ("08:00", "marketing", "1", "0"),
        ("09:00", "marketing", "0", "1"),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"groupBy": "week"},
        {"groupBy": "day,hour"},
        {"groupBy": "provider,provider"},
        {"format": "xml"},
        {"from": "tomorrow"},
    ],
)
async def test_bad_report_requests_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get(REPORTS, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_csv_is_what_a_csv_writer_makes_of_the_json_rows(
    client: httpx.AsyncClient, postroom: Postroom, seeded: dict[str, Any]
) -> None:
    """The CSV's lines are built straight from the database's rows: with names that
    need quoting, over closed days (rolled up) and today (counted), every line is
    what ``csv.writer`` writes for the same report's JSON rows."""
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(providers_t)
            .where(providers_t.c.id == seeded["relay"])
            .values(name='relay, "main"')
        )
    await Seeder(postroom).message(
        queue_id=seeded["queues"]["bulk"],
        provider_id=seeded["esp"],
        created=at(DAY_A, 15),
        tags=["spring\nsale, 50%"],
        recipients=[{"status": "sent", "sent_at": at(DAY_A, 15)}],
    )
    params = {"from": "2026-01-08", "to": "2026-01-10", "groupBy": "day,provider,tag,type"}
    text = (await client.get(REPORTS, params=params)).text
    body = (await client.get(REPORTS, params={**params, "format": "json"})).json()

    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(body["columns"])
    writer.writerows([row[c] for c in body["columns"]] for row in body["rows"])
    assert text == expected.getvalue()
    labels = {(r["day"], r["provider"], r["tag"]) for r in parse_csv(text)}
    assert ("2026-01-08", 'relay, "main"', "welcome") in labels
    assert ("2026-01-08", "esp", "spring\nsale, 50%") in labels
    assert any(r["day"] == "2026-01-10" for r in body["rows"])  # today's counted rows too
