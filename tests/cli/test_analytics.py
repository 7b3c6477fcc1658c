"""``postroom analytics report`` writes the report to a file; ``rebuild`` re-sums days."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from postroom.cli import app


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cli_report_writes_the_same_figures_and_rebuild_reports_days(
    runner: CliRunner, tmp_path: Path
) -> None:
    sent = runner.invoke(
        app,
        ["send", "--to", "ann@example.com", "--from", "app@example.com", "--subject", "Hi",
         "--text", "Hello"],
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    burst = runner.invoke(app, ["worker", "--burst"])
    assert burst.exit_code == 0, burst.output
    today = datetime.now(UTC).date().isoformat()
    out = tmp_path / "report.csv"

    result = runner.invoke(
        app, ["analytics", "report", "--from", today, "--to", today, "-o", str(out)]
    )

    assert result.exit_code == 0, result.output
    rows = parse_csv(out.read_text())
    assert [(r["day"], r["sent"]) for r in rows] == [(today, "1")]
    as_json = tmp_path / "report.json"
    result = runner.invoke(
        app,
        ["analytics", "report", "--from", today, "--to", today, "--format", "json",
         "--group-by", "provider", "-o", str(as_json)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["sent"] for r in json.loads(as_json.read_text())["rows"]] == [1]

    rebuilt = runner.invoke(app, ["analytics", "rebuild", "--from", "2025-12-01", "--to", today])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt" in rebuilt.output

    bad = runner.invoke(app, ["analytics", "report", "--from", "soon", "--to", today, "-o", "x"])
    assert bad.exit_code != 0
    assert "Traceback" not in bad.output
    assert "from: not an ISO date" in bad.output
