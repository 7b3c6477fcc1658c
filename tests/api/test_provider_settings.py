"""What a provider's settings may hold, checked at creation and update: known keys
only, no credentials in clear, outbound URLs past the SSRF guard, the outbox inside
the data directory, only the types users may create; and how secrets are shown."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.providers import registry
from postroom.services.providers import scrub
from tests.support.providers import add_provider

PROVIDERS = "/api/system/email/providers"
API_KEY = "SG.0123456789abcdefghijklmnop.QrStUvWxYz9f3a"

#: a valid body per user type
VALID: dict[str, dict[str, Any]] = {
    "smtp": {
        "config": {"host": "smtp.example.com", "port": 587},
        "authentication": {"user": "ann", "password": "SuperSecretyPassw0rd"},
    },
    "sendgrid": {"config": {}, "authentication": {"apiKey": API_KEY}},
    "mailgun": {"config": {"domain": "mg.example.com"}, "authentication": {"apiKey": "key-0123"}},
    "ses": {
        "config": {"region": "eu-west-1"},
        "authentication": {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7"},
    },
    "postmark": {"config": {}, "authentication": {"serverToken": "pm-token"}},
    "custom": {
        "config": {"url": "https://hooks.example.com/postroom"},
        "authentication": {"secret": "whsec"},
    },
    "file": {"config": {}, "authentication": {}},
}


def body(ptype: str, *, config: dict[str, Any] | None = None, **auth: Any) -> dict[str, Any]:
    valid = VALID[ptype]
    return {
        "name": f"the {ptype}",
        "type": ptype,
        "config": {**valid["config"], **(config or {})},
        "authentication": {**valid["authentication"], **auth},
    }


def assert_refused(response: httpx.Response, field: str, words: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert words in problem["detail"], problem
    assert [e["field"] for e in problem["errors"]] == [field], problem


def test_every_user_type_has_a_valid_body() -> None:
    assert set(VALID) == set(registry.USER_TYPES)


@pytest.mark.parametrize("ptype", sorted(VALID))
async def test_the_valid_bodies_are_accepted(client: httpx.AsyncClient, ptype: str) -> None:
    response = await client.post(PROVIDERS, json=body(ptype))
    assert response.status_code == 201, response.text


# -- 7.4: unknown keys -------------------------------------------------------------


@pytest.mark.parametrize("ptype", sorted(VALID))
async def test_unknown_config_keys_are_refused_with_the_valid_ones(
    client: httpx.AsyncClient, ptype: str
) -> None:
    response = await client.post(PROVIDERS, json=body(ptype, config={"baseURL": "x"}))
    assert_refused(response, "config.baseURL", f"unknown config key 'baseURL' for a {ptype}")
    valid = registry.adapter_class(ptype).config_keys
    assert f"(valid: {', '.join(sorted(valid))})" in response.json()["detail"]


@pytest.mark.parametrize("ptype", sorted(VALID))
async def test_unknown_authentication_keys_are_refused(
    client: httpx.AsyncClient, ptype: str
) -> None:
    response = await client.post(PROVIDERS, json=body(ptype, pasword="typo-in-the-name"))
    assert_refused(response, "authentication.pasword", "unknown authentication key 'pasword'")
    assert "typo-in-the-name" not in response.text


async def test_unknown_keys_are_refused_on_update_too(client: httpx.AsyncClient) -> None:
    created = (await client.post(PROVIDERS, json=body("sendgrid"))).json()
    response = await client.put(f"{PROVIDERS}/{created['id']}", json={"config": {"timeout": 5000}})
    assert_refused(response, "config.timeout", "unknown config key 'timeout'")


# -- 7.9: the internal fake type -----------------------------------------------------


async def test_the_fake_type_is_not_offered(client: httpx.AsyncClient, postroom: Postroom) -> None:
    response = await client.post(PROVIDERS, json={"name": "F", "type": "fake"})
    assert_refused(response, "type", "unknown provider type 'fake'")
    assert "fake" not in response.json()["detail"].partition("known:")[2]

    created = (await client.post(PROVIDERS, json=body("file"))).json()
    response = await client.put(f"{PROVIDERS}/{created['id']}", json={"type": "fake"})
    assert_refused(response, "type", "unknown provider type 'fake'")

    schema = create_app(postroom, workers=0).openapi()["components"]["schemas"]
    assert schema["ProviderCreate"]["properties"]["type"]["enum"] == list(registry.USER_TYPES)
    assert "fake" not in str(schema["ProviderUpdate"]["properties"]["type"])


async def test_an_internal_provider_can_still_be_switched_off(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    provider_id = await add_provider(postroom, name="scripted", type="fake")
    response = await client.put(f"{PROVIDERS}/{provider_id}", json={"enabled": False})
    assert response.status_code == 200, response.text


# -- 7.10: masking -------------------------------------------------------------------


async def test_secrets_are_shown_without_their_characters(client: httpx.AsyncClient) -> None:
    shown = {}
    for ptype in ("smtp", "sendgrid", "ses", "custom"):
        response = await client.post(
            PROVIDERS,
            json=body(ptype, headers={"Authorization": "Bearer t0k3n-abcdef"})
            if ptype == "custom"
            else body(ptype),
        )
        assert response.status_code == 201, response.text
        shown[ptype] = response.json()["authentication"]
    assert shown["smtp"] == {"user": "ann", "password": "****"}  # was "Su****yPw"
    assert shown["sendgrid"] == {"apiKey": "****9f3a"}
    assert shown["ses"] == {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "****"}
    assert shown["custom"] == {"secret": "****", "headers": {"Authorization": "****"}}
    listed = (await client.get(PROVIDERS)).text
    for secret in ("SuperSecretyPassw0rd", "Su****", "yPw", "t0k3n", "wJalr", API_KEY[:-4]):
        assert secret not in listed


async def test_masked_values_sent_back_keep_the_secret(client: httpx.AsyncClient) -> None:
    created = (await client.post(PROVIDERS, json=body("sendgrid"))).json()
    response = await client.put(
        f"{PROVIDERS}/{created['id']}", json={"authentication": {"apiKey": "****9f3a"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["authentication"] == {"apiKey": "****9f3a"}


# -- 8.16: credentials in config.headers ---------------------------------------------


@pytest.mark.parametrize(
    "header", ["Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Auth-Token"]
)
async def test_credential_headers_in_config_are_refused(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.post(
        PROVIDERS, json=body("custom", config={"headers": {header: "Bearer s3cr3t-value"}})
    )
    assert_refused(response, f"config.headers.{header}", "put it in 'authentication.headers'")
    assert "s3cr3t-value" not in response.text


async def test_ordinary_headers_stay_in_config(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PROVIDERS, json=body("custom", config={"headers": {"X-Tenant": "acme"}})
    )
    assert response.status_code == 201, response.text
    assert response.json()["config"]["headers"] == {"X-Tenant": "acme"}


async def test_credential_headers_stored_earlier_are_shown_masked(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await add_provider(
        postroom,
        name="legacy",
        type="custom",
        config={"url": "https://hooks.example.com/x", "headers": {"Authorization": "Bearer t0k"}},
        authentication={"secret": "whsec"},
    )
    response = await client.get(f"{PROVIDERS}/legacy")
    assert response.json()["config"]["headers"] == {"Authorization": "****"}
    assert "t0k" not in response.text


# -- 8.7: the SSRF guard at creation -------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "where", "url", "words"),
    [
        ("sendgrid", "config.baseUrl", "http://127.0.0.1:8025", "is a loopback address"),
        ("mailgun", "config.baseUrl", "http://10.0.0.1", "is a private address"),
        ("postmark", "config.baseUrl", "http://169.254.169.254", "is a link-local address"),
        ("ses", "config.endpoint", "http://[fd00::1]:8080", "is a private address"),
        ("ses", "config.baseUrl", "http://[::ffff:127.0.0.1]", "is a loopback address"),
        ("custom", "config.url", "http://10.0.0.1/hook", "is a private address"),
        ("custom", "config.url", "http://169.254.169.254/latest", "is a link-local address"),
        ("custom", "config.healthUrl", "http://[::1]:9/health", "is a loopback address"),
        ("custom", "config.url", "http://localhost:8080/hook", "resolves to"),
        ("smtp", "authentication.tokenUrl", "http://127.0.0.1/token", "is a loopback address"),
    ],
)
async def test_forbidden_addresses_are_refused_at_creation(
    client: httpx.AsyncClient, ptype: str, where: str, url: str, words: str
) -> None:
    section, _, key = where.partition(".")
    if section == "config":
        request = body(ptype, config={key: url})
    else:
        request = body(ptype, method="oauth2", clientId="c", clientSecret="s", refreshToken="r")
        request["authentication"].pop("password")
        request["authentication"][key] = url
    response = await client.post(PROVIDERS, json=request)
    assert_refused(response, where, f"{where}: refusing")
    assert words in response.json()["detail"] and "config.allowNetworks" in response.text


async def test_allow_networks_is_the_way_in(client: httpx.AsyncClient) -> None:
    allowed = body("sendgrid", config={"baseUrl": "http://127.0.0.1:8025"})
    allowed["config"]["allowNetworks"] = ["127.0.0.0/8"]
    assert (await client.post(PROVIDERS, json=allowed)).status_code == 201

    other = body(
        "postmark", config={"baseUrl": "http://10.1.2.3", "allowNetworks": ["10.9.0.0/16"]}
    )
    assert_refused(await client.post(PROVIDERS, json=other), "config.baseUrl", "private address")


async def test_a_name_that_does_not_resolve_yet_is_accepted(client: httpx.AsyncClient) -> None:
    request = body("sendgrid", config={"baseUrl": "https://sendgrid-proxy.invalid"})
    assert (await client.post(PROVIDERS, json=request)).status_code == 201


@pytest.mark.parametrize(
    ("url", "words"),
    [("ftp://api.example.com", "http(s)://"), ("https://u:p@api.example.com", "credentials")],
)
async def test_urls_must_be_plain_http(client: httpx.AsyncClient, url: str, words: str) -> None:
    response = await client.post(PROVIDERS, json=body("sendgrid", config={"baseUrl": url}))
    assert_refused(response, "config.baseUrl", words)


# -- 8.8: the outbox directory -------------------------------------------------------


@pytest.mark.parametrize("directory", ["../escaped-rel", "/tmp/postroom-escaped-abs"])
async def test_the_outbox_must_stay_in_the_data_directory(
    client: httpx.AsyncClient, directory: str
) -> None:
    response = await client.post(PROVIDERS, json=body("file", config={"directory": directory}))
    assert_refused(response, "config.directory", "outside the data directory")


def test_secrets_echoed_in_provider_errors_are_masked_too() -> None:
    secrets = {"user": "ann", "password": "hunter2hunter2", "apiKey": "SG.0123456789abcdef9f3a"}
    text = "535 auth failed for ann / hunter2hunter2 with SG.0123456789abcdef9f3a"
    assert scrub(text, secrets) == "535 auth failed for ann / **** with ****9f3a"


@pytest.mark.parametrize(
    ("ptype", "secrets"),
    [
        ("mailgun", {"webhookSigningKey": "key-hook"}),
        ("sendgrid", {"webhookPublicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"}),
        ("postmark", {"webhookUser": "hooks", "webhookPassword": "pw"}),
        ("ses", {"webhookTopicArn": "arn:aws:sns:eu-west-1:123456789012:ses"}),
    ],
)
async def test_webhook_secrets_are_accepted_and_masked(
    client: httpx.AsyncClient, ptype: str, secrets: dict[str, str]
) -> None:
    response = await client.post(PROVIDERS, json=body(ptype, **secrets))
    assert response.status_code == 201, response.text
    shown = response.json()["authentication"]
    assert set(secrets) <= set(shown)
    assert all(shown[k] != v for k, v in secrets.items() if len(v) > 8)


async def test_a_webhook_secret_of_another_esp_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(PROVIDERS, json=body("mailgun", webhookPublicKey="x"))
    assert_refused(response, "authentication.webhookPublicKey", "unknown authentication key")
