"""Settings: environment over postroom.toml over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from postroom.config import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("POSTROOM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.effective_database_url == "sqlite+aiosqlite:///var/postroom.db"
    assert settings.data_dir == Path("var")
    assert settings.outbox_dir == Path("var/outbox")
    assert (settings.host, settings.port) == ("127.0.0.1", 8025)


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "postroom.toml").write_text(
        'database_url = "postgresql://app@db.internal/mail"\nport = 9000\n'
        "[worker]\nconcurrency = 7\nbatch_size = 11\n"
    )
    settings = load_settings()
    assert settings.effective_database_url == "postgresql+asyncpg://app@db.internal/mail"
    worker = settings.worker
    assert (settings.port, worker.concurrency, worker.batch_size) == (9000, 7, 11)

    monkeypatch.setenv("POSTROOM_PORT", "9100")
    monkeypatch.setenv("POSTROOM_WORKER__CONCURRENCY", "64")
    settings = load_settings()
    assert (settings.port, settings.worker.concurrency, settings.worker.batch_size) == (
        9100,
        64,
        11,
    )


def test_config_file_named_by_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('default_from = "App <noreply@example.com>"\n')
    monkeypatch.setenv("POSTROOM_CONFIG", str(path))
    assert load_settings().default_from == "App <noreply@example.com>"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        load_settings()


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "postroom.toml").write_text("databse_url = 'typo'\n")
    with pytest.raises(ValidationError, match="databse_url"):
        load_settings()


def test_unsupported_database_urls_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_DATABASE_URL", "mysql://app@db/mail")
    with pytest.raises(ValidationError, match="sqlite:///path or postgresql://"):
        load_settings()
