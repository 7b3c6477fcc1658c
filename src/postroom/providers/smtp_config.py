"""SMTP provider configuration: the spec's ``SMTPConfig`` fields, validated.

Times in the stored config are milliseconds (as in the spec); here they are seconds.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from postroom.errors import ConfigError
from postroom.providers.egress import IPNetwork, parse_networks

AuthMethod = Literal["plain", "login", "xoauth2"]
_AUTH_METHODS: dict[str, AuthMethod] = {
    "plain": "plain",
    "login": "login",
    "oauth2": "xoauth2",
    "xoauth2": "xoauth2",
}


#: the keys an SMTP provider's ``config`` accepts (``authentication`` may also be
#: given inside it, as in the spec; it is moved out before this check)
CONFIG_KEYS = frozenset(
    {
        "host",
        "port",
        "secure",
        "requireTLS",
        "ignoreTLS",
        "connectionTimeout",
        "greetingTimeout",
        "socketTimeout",
        "dnsTimeout",
        "maxConnections",
        "maxMessages",
        "rateLimit",
        "rateDelta",
        "tlsVerify",
        "caFile",
        "localHostname",
        "allowNetworks",
    }
)
AUTHENTICATION_KEYS = frozenset(
    {
        "user",
        "password",
        "method",
        "accessToken",
        "tokenUrl",
        "clientId",
        "clientSecret",
        "refreshToken",
    }
)


def _number(config: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"smtp: {key} must be a number >= {minimum:g}, not {value!r}")
    return float(value)


def _int(config: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = _number(config, key, default, minimum)
    if value != int(value):
        raise ConfigError(f"smtp: {key} must be a whole number, not {config[key]!r}")
    return int(value)


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"smtp: {key} must be true or false, not {value!r}")
    return value


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 for c in value):
        raise ConfigError(f"smtp: {key} must be a string without spaces or control characters")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class SMTPSettings:
    """Validated connection settings; the spec's milliseconds become seconds here."""

    host: str
    port: int
    secure: bool = False
    require_tls: bool = False
    #: never STARTTLS, even when offered (local relays, smtp-sink)
    ignore_tls: bool = False
    connection_timeout_s: float = 30.0
    greeting_timeout_s: float = 30.0
    #: per reply; for DATA this covers uploading the whole message
    socket_timeout_s: float = 120.0
    dns_timeout_s: float = 30.0
    max_connections: int = 5
    max_messages: int = 100
    #: messages per ``rate_delta_s`` in this process; 0 means unlimited
    rate_limit: int = 0
    rate_delta_s: float = 1.0
    tls_verify: bool = True
    #: CA bundle that replaces the system trust store
    ca_file: Path | None = None
    local_hostname: str | None = None
    #: networks the XOAUTH2 ``tokenUrl`` may be on although they are not public
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base_dir: Path | None = None) -> SMTPSettings:
        """Settings from the spec's camelCase ``SMTPConfig``; ConfigError when invalid."""
        host = _text(config, "host")
        if host is None:
            raise ConfigError("smtp: host is required")
        secure = _flag(config, "secure", False)
        require_tls = _flag(config, "requireTLS", False)
        ignore_tls = _flag(config, "ignoreTLS", False)
        if require_tls and ignore_tls:
            raise ConfigError("smtp: requireTLS and ignoreTLS contradict each other")
        ca_file = _text(config, "caFile")
        ca_path = Path(ca_file) if ca_file else None
        if ca_path is not None and not ca_path.is_absolute() and base_dir is not None:
            ca_path = base_dir / ca_path
        return cls(
            host=host,
            port=_int(config, "port", 465 if secure else 587, 1),
            secure=secure,
            require_tls=require_tls,
            ignore_tls=ignore_tls,
            connection_timeout_s=_number(config, "connectionTimeout", 30_000, 1) / 1000,
            greeting_timeout_s=_number(config, "greetingTimeout", 30_000, 1) / 1000,
            socket_timeout_s=_number(config, "socketTimeout", 120_000, 1) / 1000,
            dns_timeout_s=_number(config, "dnsTimeout", 30_000, 1) / 1000,
            max_connections=_int(config, "maxConnections", 5, 1),
            max_messages=_int(config, "maxMessages", 100, 1),
            rate_limit=_int(config, "rateLimit", 0, 0),
            rate_delta_s=_number(config, "rateDelta", 1000, 1) / 1000,
            tls_verify=_flag(config, "tlsVerify", True),
            ca_file=ca_path,
            local_hostname=_text(config, "localHostname"),
            allow_networks=parse_networks(config.get("allowNetworks")),
        )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"smtp: port must be between 1 and 65535, not {self.port}")

    def tls_context(self) -> ssl.SSLContext:
        """One context for every connection, so CA files are read once."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smtp: cannot load caFile {self.ca_file}: {exc}") from exc
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, kw_only=True, slots=True)
class SMTPAuth:
    """Credentials; ``method=None`` lets the server's offer decide (CRAM-MD5, PLAIN, LOGIN)."""

    user: str
    password: str | None = field(default=None, repr=False)
    method: AuthMethod | None = None
    #: a static XOAUTH2 token, or the refresh-token grant below
    access_token: str | None = field(default=None, repr=False)
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, auth: Mapping[str, Any]) -> SMTPAuth | None:
        """Credentials from the spec's ``authentication``; None when there is no user."""
        user = auth.get("user")
        if not user:
            return None
        raw_method = auth.get("method")
        method = _AUTH_METHODS.get(str(raw_method).lower()) if raw_method else None
        if raw_method and method is None:
            known = ", ".join(_AUTH_METHODS)
            raise ConfigError(f"smtp: unknown auth method {raw_method!r} (known: {known})")
        fields = {
            key: auth.get(name) or None
            for key, name in (
                ("password", "password"),
                ("access_token", "accessToken"),
                ("token_url", "tokenUrl"),
                ("client_id", "clientId"),
                ("client_secret", "clientSecret"),
                ("refresh_token", "refreshToken"),
            )
        }
        if not all(isinstance(v, str | None) for v in (user, *fields.values())):
            raise ConfigError("smtp: authentication values must be strings")
        if method == "xoauth2":
            grant = ("token_url", "client_id", "client_secret", "refresh_token")
            if not fields["access_token"] and not all(fields[key] for key in grant):
                raise ConfigError(
                    "smtp: oauth2 needs accessToken, or tokenUrl, clientId, clientSecret "
                    "and refreshToken"
                )
        elif not fields["password"]:
            raise ConfigError("smtp: authentication.password is required")
        return cls(user=user, method=method, **fields)
