"""``postroom suppressions``, ``webhooks replay`` and ``inbound`` (stdin)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from postroom.cli import app


def test_suppressions_add_list_export_import_remove(runner: CliRunner, tmp_path: Path) -> None:
    added = runner.invoke(app, ["suppressions", "add", "Ann@example.com", "--scope", "marketing"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["suppressions", "list"])
    assert "ann@example.com" in listed.output and "marketing" in listed.output

    csv = tmp_path / "s.csv"
    csv.write_text("email,reason\nbob@example.com,complaint\n")
    imported = runner.invoke(app, ["suppressions", "import", str(csv)])
    assert imported.exit_code == 0 and "1 added" in imported.output
    exported = runner.invoke(app, ["suppressions", "export"])
    assert exported.output.splitlines()[1].startswith("ann@example.com,marketing,manual")
    assert exported.output.splitlines()[2].startswith("bob@example.com,global,complaint")

    bad = runner.invoke(app, ["suppressions", "add", "nope", "--scope", "global"])
    assert bad.exit_code != 0 and "not an email address" in bad.output
    assert runner.invoke(app, ["suppressions", "remove", "ann@example.com"]).exit_code == 0
    gone = runner.invoke(app, ["suppressions", "remove", "ann@example.com"])
    assert gone.exit_code != 0 and "not suppressed" in gone.output


def test_webhooks_replay_with_nothing_stored(runner: CliRunner) -> None:
    result = runner.invoke(app, ["webhooks", "replay"])
    assert result.exit_code == 0, result.output
    assert "0 payloads" in result.output
    bad = runner.invoke(app, ["webhooks", "replay", "--since", "yesterday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_inbound_reads_stdin_and_refuses_what_is_no_report(runner: CliRunner) -> None:
    sample = Path(__file__).parents[1] / "tracking" / "samples" / "postfix_user_unknown.eml"
    raw = sample.read_text().format(
        recipient="ann@example.com", message_id="<x@example.com>", postroom_id="nope"
    )
    result = runner.invoke(app, ["inbound"], input=raw)
    assert result.exit_code == 0, result.output
    assert "dsn report: 0 recorded" in result.output and "1 unmatched" in result.output
    letter = runner.invoke(app, ["inbound"], input="Subject: hi\n\nhello\n")
    assert letter.exit_code != 0 and "neither a delivery status" in letter.output
