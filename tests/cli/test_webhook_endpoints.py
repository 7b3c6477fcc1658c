"""``postroom webhooks endpoints``: add, list, deliveries, remove; clear errors."""

from __future__ import annotations

from typer.testing import CliRunner

from postroom.cli import app


def test_add_list_and_remove(runner: CliRunner) -> None:
    added = runner.invoke(
        app,
        [
            *("webhooks", "endpoints", "add", "http://127.0.0.1:9000/hooks"),
            *("--event", "email.bounced", "--allow-network", "127.0.0.0/8"),
        ],
    )
    assert added.exit_code == 0, added.output
    endpoint_id = added.output.split()[1]
    secret = added.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_")

    listed = runner.invoke(app, ["webhooks", "endpoints", "list"])
    assert listed.exit_code == 0
    assert endpoint_id in listed.output and "email.bounced" in listed.output
    assert secret not in listed.output

    log = runner.invoke(app, ["webhooks", "endpoints", "deliveries", endpoint_id])
    assert log.exit_code == 0 and "ATTEMPTS" in log.output

    removed = runner.invoke(app, ["webhooks", "endpoints", "remove", endpoint_id])
    assert removed.exit_code == 0
    again = runner.invoke(app, ["webhooks", "endpoints", "remove", endpoint_id])
    assert again.exit_code != 0 and "no webhook endpoint" in again.output


def test_a_private_url_is_refused_with_the_reason(runner: CliRunner) -> None:
    refused = runner.invoke(app, ["webhooks", "endpoints", "add", "http://10.0.0.5/hook"])
    assert refused.exit_code != 0
    assert "private" in refused.output and "allowNetworks" in refused.output
    unknown = runner.invoke(
        app, ["webhooks", "endpoints", "add", "http://x.example/", "--event", "sent"]
    )
    assert unknown.exit_code != 0 and "--event" in unknown.output
