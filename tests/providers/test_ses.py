from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers import registry, sigv4
from postroom.providers.base import ProviderSpec
from postroom.providers.ses import SESProvider
from tests.providers.fake_esp import LOOPBACK
from tests.providers.http_contract import HTTPProviderContract

if TYPE_CHECKING:
    from tests.providers.fake_esp import SESFake

KEYS = {
    "accessKeyId": "AKIDEXAMPLE",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}


def spec_for(esp: SESFake, **config: Any) -> ProviderSpec:
    return ProviderSpec(
        id="prv-ses",
        name="ses-main",
        type="ses",
        config={
            "region": "eu-west-1",
            "endpoint": esp.base_url,
            "allowNetworks": LOOPBACK,
            "socketTimeout": 5000,
            **config,
        },
        authentication=dict(KEYS),
    )


@pytest.fixture
async def provider(ses_esp, provider_context) -> AsyncIterator[SESProvider]:
    built = registry.build(spec_for(ses_esp), provider_context)
    assert isinstance(built, SESProvider)
    yield built
    await built.aclose()


def test_sigv4_matches_the_aws_documented_example():
    """The IAM ListUsers example from AWS's SigV4 documentation."""
    added = sigv4.sign(
        method="GET",
        url="https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        headers={
            "Host": "iam.amazonaws.com",
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        },
        body=b"",
        credentials=sigv4.Credentials(
            access_key_id=KEYS["accessKeyId"], secret_access_key=KEYS["secretAccessKey"]
        ),
        region="us-east-1",
        service="iam",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert added == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    }


def test_credentials_repr_hides_the_secret():
    creds = sigv4.Credentials(access_key_id="AKID", secret_access_key="very-secret")
    assert "very-secret" not in repr(creds)


async def test_send_posts_signed_raw_mime_and_maps_the_message_id(provider, ses_esp, outgoing):
    result = await provider.send(outgoing)

    assert result.provider == "ses-main"
    assert result.provider_message_id.startswith("0100018d-")
    request = ses_esp.last  # the fake verified the SigV4 signature with botocore
    assert (request.method, request.path) == ("POST", "/v2/email/outbound-emails")
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert (
        "/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, "
        in (request.headers["authorization"])
    )
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "FromEmailAddress": "news@example.com",
        "Destination": {
            "ToAddresses": ["ann@example.org", "bob@example.org"],
            "CcAddresses": ["cat@example.org"],
            "BccAddresses": ["dan@example.org"],
        },
        "Content": {"Raw": {"Data": base64.b64encode(outgoing.mime).decode()}},
    }


async def test_configuration_set_and_session_token(ses_esp, provider_context, outgoing):
    ses_esp.session_token = "FwoGZXIvYXdzEXAMPLE"
    spec = spec_for(ses_esp, configurationSetName="postroom-events")
    spec = replace(spec, authentication={**KEYS, "sessionToken": "FwoGZXIvYXdzEXAMPLE"})
    provider = registry.build(spec, provider_context)
    try:
        await provider.send(outgoing)
    finally:
        ses_esp.session_token = None
        await provider.aclose()
    request = ses_esp.last
    assert request.json()["ConfigurationSetName"] == "postroom-events"
    assert request.headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLE"
    assert "x-amz-security-token" in request.headers["authorization"]


async def test_wrong_secret_fails_the_signature_check(ses_esp, provider_context, outgoing):
    spec = replace(spec_for(ses_esp), authentication={**KEYS, "secretAccessKey": "wrong"})
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderAuthError, match="InvalidSignatureException"):
            await provider.send(outgoing)
        health = await provider.check()
        assert not health.ok and "InvalidSignatureException" in health.detail
    finally:
        await provider.aclose()


async def test_wrong_region_scope_is_refused(ses_esp, provider_context, outgoing):
    provider = registry.build(spec_for(ses_esp, region="us-east-1"), provider_context)
    try:
        with pytest.raises(ProviderAuthError):
            await provider.send(outgoing)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "MessageRejected", ProviderRejected),
        (400, "MailFromDomainNotVerifiedException", ProviderRejected),
        (400, "BadRequestException", ProviderRejected),
        (429, "TooManyRequestsException", ProviderTransientError),
        (400, "ThrottlingException", ProviderTransientError),
        (400, "LimitExceededException", ProviderTransientError),
        (400, "AccountSuspendedException", ProviderAuthError),
        (400, "SendingPausedException", ProviderAuthError),
        (403, "AccessDeniedException", ProviderAuthError),
        (500, "InternalFailure", ProviderTransientError),
    ],
)
async def test_ses_error_types_are_mapped(provider, ses_esp, outgoing, status, code, expected):
    ses_esp.script_error(status, code, f"{code} happened")
    with pytest.raises(expected) as info:
        await provider.send(outgoing)
    assert type(info.value) is expected
    assert code in str(info.value)
    assert info.value.status == status


async def test_error_type_in_the_body_is_understood(provider, ses_esp, outgoing):
    ses_esp.script(400, {"__type": "com.amazonaws.ses#MessageRejected", "message": "no"})
    with pytest.raises(ProviderRejected, match="MessageRejected"):
        await provider.send(outgoing)


async def test_429_is_transient_with_retry_after(provider, ses_esp, outgoing):
    ses_esp.script_error(
        429, "TooManyRequestsException", "Too many requests", **{"Retry-After": "3"}
    )
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing)
    assert info.value.retry_after == 3.0
    assert info.value.context["rate_limited"] is True


async def test_check_reads_the_account(provider, ses_esp):
    health = await provider.check()
    assert health.ok and "50000" in health.detail
    request = ses_esp.last
    assert (request.method, request.path) == ("GET", "/v2/email/account")


async def test_check_is_unhealthy_when_sending_is_paused(provider, ses_esp):
    ses_esp.sending_enabled = False
    health = await provider.check()
    assert not health.ok and "paused" in health.detail


async def test_default_endpoint_is_regional(provider_context):
    spec = ProviderSpec(
        id="x", name="ses", type="ses", config={"region": "ap-south-1"}, authentication=KEYS
    )
    provider = SESProvider.from_spec(spec, provider_context)
    await provider.aclose()
    assert provider.base_url == "https://email.ap-south-1.amazonaws.com"


def test_region_and_keys_are_required(provider_context):
    with pytest.raises(ConfigError, match="region"):
        SESProvider.from_spec(
            ProviderSpec(id="x", name="ses", type="ses", authentication=KEYS), provider_context
        )
    with pytest.raises(ConfigError, match="secretAccessKey"):
        SESProvider.from_spec(
            ProviderSpec(
                id="x",
                name="ses",
                type="ses",
                config={"region": "eu-west-1"},
                authentication={"accessKeyId": "AKID"},
            ),
            provider_context,
        )


class TestContract(HTTPProviderContract):
    esp_fixture = "ses_esp"
    spec_for = staticmethod(spec_for)
