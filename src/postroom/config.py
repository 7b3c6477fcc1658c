"""Settings: ``POSTROOM_*`` environment variables over an optional ``postroom.toml``.

This is the only module that reads the environment. Tunables carry their unit in
their name (``poll_interval_s``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: where an optional config file is looked for; POSTROOM_CONFIG overrides it
DEFAULT_CONFIG_FILE = "postroom.toml"


class WorkerSettings(BaseSettings):
    """How a worker process claims and sends."""

    model_config = SettingsConfigDict(extra="forbid")

    #: concurrent sends per worker process
    concurrency: int = Field(default=100, ge=1, le=1000)
    #: jobs claimed per round trip
    batch_size: int = Field(default=100, ge=1, le=1000)
    #: how long an idle worker waits before looking again (when nothing wakes it)
    poll_interval_s: float = Field(default=0.5, gt=0)
    #: a claimed job's lease; heartbeats extend it while a send is in flight
    lease_s: float = Field(default=60.0, gt=1)
    #: on shutdown, how long in-flight sends may take before their jobs are released
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: retention: each worker prunes finished mail older than this many days once an
    #: hour (like ``postroom prune --older-than Nd``); ``None``: never (the default)
    prune_after_days: int | None = Field(default=None, ge=1)
    #: helper processes that compute DKIM's RSA signatures, so the worker keeps
    #: sending on its own core meanwhile; 0: signed in the worker process itself
    dkim_signers: int = Field(default=1, ge=0, le=64)


class MetricsSettings(BaseSettings):
    """``/metrics`` for Prometheus without an API key, on an address of its own
    (``postroom serve`` and ``postroom worker``); the API's ``/metrics`` keeps
    needing a ``read`` key."""

    model_config = SettingsConfigDict(extra="forbid")

    #: keep it on a private interface: what it shows is not secret, but not public
    host: str = "127.0.0.1"
    #: ``None``: no separate listener (the default)
    port: int | None = Field(default=None, ge=0, le=65535)


class SmtpSettings(BaseSettings):
    """The SMTP submission relay (``postroom smtpd``, ``postroom serve --smtp-port``)."""

    model_config = SettingsConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    #: the submission port (STARTTLS when a certificate is set); ``None``: the relay is off
    port: int | None = Field(default=None, ge=1, le=65535)
    #: a second port with implicit TLS (RFC 8314); needs a certificate
    tls_port: int | None = Field(default=None, ge=1, le=65535)
    #: PEM certificate chain and private key; without them AUTH is refused (see below)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: the name in the greeting and EHLO reply
    hostname: str = "postroom.localhost"
    #: client networks (CIDR) that may submit without AUTH, like Postal's SMTP-IP credentials
    trusted_networks: list[str] = Field(default_factory=list)
    #: allow AUTH without TLS, only when the relay listens on a loopback address
    insecure_loopback_auth: bool = False
    #: envelope recipients accepted per message
    max_recipients: int = Field(default=100, ge=1, le=1000)
    #: messages a credential (API key, or client address for trusted networks) may
    #: submit per minute, per relay process; 0: no limit
    rate_limit_per_minute: int = Field(default=6000, ge=0)
    #: seconds a connection may stay idle before it is closed
    timeout_s: float = Field(default=300.0, gt=0)


class Settings(BaseSettings):
    """All of Postroom's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="POSTROOM_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: runtime data: the SQLite database, the dev outbox, the generated dev secret
    data_dir: Path = Path("var")
    #: SQLAlchemy URL; empty means SQLite at ``<data_dir>/postroom.db``
    database_url: str = ""
    #: Fernet key for provider credentials; a dev key is generated when unset
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    #: largest accepted message: content plus attachments, in bytes
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    #: sender used when a request has no ``from``, e.g. ``"Example <noreply@example.com>"``
    default_from: str = ""
    #: the domain in generated Message-IDs when the sender's cannot be used
    message_id_domain: str = "postroom.localhost"
    #: consecutive soft bounces after which an address is suppressed (0: never)
    suppress_after_soft_bounces: int = Field(default=3, ge=0)
    #: how old a signed webhook (Mailgun timestamp) may be, in seconds
    webhook_max_age_s: int = Field(default=300, ge=1)
    #: base URL of the public pixel, click and unsubscribe routes; empty: http://host:port
    public_url: str = ""
    #: tracking link keys ``id:secret,id2:secret2`` (the first signs, all verify);
    #: empty: one key derived from the secret key
    tracking_keys: SecretStr | None = None
    #: how long tracking and unsubscribe links keep working, in days
    tracking_link_days: int = Field(default=400, ge=1)
    #: trackOpens/trackClicks when a request does not say, per email type
    tracking_defaults: dict[str, dict[str, bool]] = Field(
        default_factory=lambda: {"marketing": {"opens": True, "clicks": True}}
    )
    #: a mailto address added to List-Unsubscribe of marketing mail; empty: https only
    unsubscribe_mailto: str = ""
    #: VERP: the domain of the envelope sender (Return-Path) of composed mail,
    #: ``<bounce_local_part>+<signed token>@<bounce_domain>``, so a bounce finds its
    #: email by the address it was sent to; empty: the From address, no token
    bounce_domain: str = ""
    #: the local part before the ``+`` of that envelope sender
    bounce_local_part: str = Field(default="bounces", pattern=r"^[A-Za-z0-9._-]{1,20}$")
    #: attempts of a queue whose ``retry`` config does not say, and of new default queues
    max_attempts: int = Field(default=5, ge=1, le=100)
    #: base of the exponential retry backoff (``base * 2^attempts``) when the queue's
    #: ``retry.baseDelaySeconds`` does not say; the spec's shape with 1 s is ``1``
    retry_base_delay_s: float = Field(default=30.0, gt=0)
    #: cap of the retry backoff when the queue's ``retry.maxDelaySeconds`` does not say
    retry_max_backoff_s: float = Field(default=3600.0, gt=0)
    #: PostgreSQL connections kept open per process, and extra ones allowed at peaks
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_max_overflow: int = Field(default=10, ge=0, le=500)
    #: SQLite busy timeout
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    #: DEBUG, INFO, WARNING, ERROR or CRITICAL
    log_level: str = "INFO"
    #: ``text`` for people, ``json`` (one object per line) for log shippers
    log_format: Literal["text", "json"] = "text"
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("log_level")
    @classmethod
    def _level_name(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept plain ``postgresql://`` / ``sqlite://`` URLs and pick the async driver."""
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite://") and not value.startswith("sqlite+"):
            return "sqlite+aiosqlite://" + value.split("://", 1)[1]
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite:///path or postgresql://user@host/db URL")
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'postroom.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("POSTROOM_CONFIG", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``postroom.toml``, then ``overrides``."""
    return Settings(**overrides)
